/** The bundle's README: the install commands for the board, in the order they must run. */
import type { BoardPaths, DeployBundleOptions } from './bundle.js';
import { OCI_USER_NAMESPACE, shiftOwnersCommand } from './oci.js';
import { UNPRIVILEGED_PORT_START, proxied, proxyUnitName } from './listen-proxy.js';
import {
  listenPort,
  serviceUnitName,
  systemdEscapePath,
  unitPerConnection,
  warmInstances,
} from './systemd.js';
import { ACCEPT_MAX_CONNECTIONS, ACCEPT_PATH } from '../accept/accept-elf.js';

export function renderReadme(o: DeployBundleOptions, p: BoardPaths): string {
  const rootUnit = `${systemdEscapePath(p.rootMount)}.mount`;
  const dataUnit = `${systemdEscapePath(p.dataMount)}.mount`;
  const inetd = o.service.inetd === true;
  const svc = serviceUnitName(o);
  const warm = warmInstances(o);
  return `# Deploying ${o.name} to the board

Copy the build output directory to the board, then as root, from that directory:

\`\`\`sh
sh deploy/install.sh install      # also: upgrade, rollback, uninstall [--purge]
\`\`\`

The script checks the board first (root, systemd as init and new enough for the unit's flags,
systemd-container, loop and squashfs support, the kernel's idmapped mounts), then the artifacts
against SHA256SUMS. It installs the image as ${p.boardDir}/releases/<id>/ beside the one running
now and switches the \`current\` link with one rename, so \`rollback\` can switch back to
\`previous\` (one previous image is kept). Switching remounts the root: a container serving a
connection keeps the old image until it ends, a listening service restarts on the new one, and
the socket keeps listening, so a connection made meanwhile waits instead of being refused. The
data partition is made from the template only the first time and kept across upgrades.
Running it again changes nothing. By hand, for the first install, the same steps are:

\`\`\`sh
sha256sum -c SHA256SUMS                      # the artifacts arrived intact
install -d -m 0755 ${p.boardDir} ${p.rootMount} ${p.dataMount}
install -m 0644 ${o.imageFile} ${p.image}
${
  p.dataIsLoopFile
    ? `# data partition as a file (use a real partition by editing What= in ${dataUnit}):
truncate -s 64M ${p.dataSource}
mkfs.ext4 -q ${p.dataSource}`
    : `mkfs.ext4 -q ${p.dataSource}                   # the data partition: everything on it is lost`
}
mount -o ${p.dataIsLoopFile ? 'loop,' : ''}noexec,nosuid,nodev ${p.dataSource} ${p.dataMount}
tar -xzpf ${o.dataTemplateFile} --numeric-owner -C ${p.dataMount}
umount ${p.dataMount}
install -m 0644 'deploy/${rootUnit}' 'deploy/${dataUnit}' deploy/${o.name}.socket deploy/${svc}${proxied(o.service) ? ` deploy/${proxyUnitName(o.name)}` : ''} /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now '${rootUnit}' '${dataUnit}' ${o.name}.socket
\`\`\`

${
  warm.length > 0
    ? `Each connection to port ${listenPort(o.service)} is served by a container of its own, started before it
arrived: the socket keeps ${warm.length} warm containers (\`${o.name}@warm1.service\` … \`${o.name}@warm${warm.length}.service\`,
\`deploy.warm-containers\`) waiting on it. In each, ${ACCEPT_PATH} (a static helper of about
1 KB in the image) takes exactly one connection, runs one process of the service with the
connection on stdin/stdout (SIGALRM after service.timeout), and exits when that process does;
systemd then starts the instance again (\`Restart=on-success\`), so a container never serves a
second connection and a connection never waits for a container to start unless all
${warm.length} are busy (it then waits in the socket's queue: they are also how many connections run at
once). Idle containers cost memory (an nspawn process each), not CPU. \`deploy.warm-containers: 0\`
starts a container per connection on arrival instead (\`Accept=yes\`, at most 32 at once).
\`systemctl stop\` ends a warm container at once, connection or not; an upgrade instead sends each
lhc-accept SIGTERM, so an idle container ends at once and a busy one when its connection ends, and
systemd starts each again on the new image`
    : unitPerConnection(o)
      ? `Each connection to port ${listenPort(o.service)} starts one container (\`${o.name}@<n>.service\`) with the
connection on stdin/stdout`
      : inetd
        ? `The first connection to port ${listenPort(o.service)} starts \`${svc}\`, whose ${ACCEPT_PATH} (a static helper of
about 1 KB in the image) then starts one process of the service per connection, with the
connection on stdin/stdout, at most ${ACCEPT_MAX_CONNECTIONS} at once`
        : !proxied(o.service)
          ? `The first connection to port ${listenPort(o.service)} starts the container (\`${svc}\`) and systemd hands
it the listening socket (\`service.socket-activation: true\`: the daemon takes it from LISTEN_FDS).
The container keeps a network namespace of its own (only \`lo\`, no route out); the socket, made
on the board, is its only way in, and connections that arrive while it restarts (an upgrade)
wait in the socket's queue`
          : `The first connection to port ${listenPort(o.service)} starts \`${o.name}-proxy.service\`, which starts the container
(\`${svc}\`) and forwards each connection to the daemon's own port ${listenPort(o.service)} inside it. The
container's network namespace belongs to \`${svc}\` (\`PrivateNetwork=yes\`, only \`lo\`, no route out,
so the service can reach nothing and nothing reaches it); the proxy (systemd-socket-proxyd)
joins that namespace (\`JoinsNamespaceOf=\`) and is the only way in`
}; its stderr${o.runtime === 'systemd' ? '' : " and nspawn's messages"} go to the journal
(\`journalctl -u '${svc.replace('@.', '@*.')}'\`). The root is the read-only image, the network is private
(only \`lo\`, CAP_NET_ADMIN dropped), no new privileges, a private user namespace, and
${o.dataPath ?? '/data'} is the only writable path, mounted noexec,nosuid,nodev.

${o.runtime === 'systemd' ? sandboxedRuntimeText(o, svc) : nspawnRuntimeText(svc)}

\`deploy/fstab\` holds the same two mounts as /etc/fstab lines, for boards that prefer fstab.
\`deploy/oci/config.json\` runs the same image under runc (\`runc run --bundle deploy/oci ${o.name}\`,
with the image mounted at ${p.rootMount} and the data partition at ${p.dataMount}), in a user
namespace that maps container root to host uid ${OCI_USER_NAMESPACE.hostId}. runc cannot idmap the data mount, so
for runc shift the data partition's owners once, after unpacking the template:

\`\`\`sh
${shiftOwnersCommand(p.dataMount)}
\`\`\`
`;
}

function sandboxedRuntimeText(o: DeployBundleOptions, svc: string): string {
  return `## Runtime: systemd (\`deploy.runtime: systemd\`)

\`${svc}\` runs ${o.service.command[0]} directly, with no systemd-nspawn process: systemd itself
sandboxes it (\`RootDirectory=\` on the read-only image, ${o.dataPath ?? '/data'} bound from the
data partition, private network, users, devices and IPC, \`ProtectSystem=strict\`, an empty
capability bounding set, \`NoNewPrivileges=\`, a system-call filter, noexec scratch mounts and the
limits from service.limits). It runs as the system user \`lhc-${o.name}\`, which install.sh
creates with systemd-sysusers from \`deploy/${o.name}.sysusers.conf\`. The service can write
only what that user may write on the data partition. \`MemoryDenyWriteExecute=yes\` needs the
payload to run natively: a board that runs it under QEMU user-mode (a JIT) needs a drop-in
with \`MemoryDenyWriteExecute=no\`. \`systemd-analyze security ${svc.replace('@.', '@i.')}\` scores
this unit; the build's \`${o.name}.exposure.json\` holds the score lhc measured.${proxied(o.service) ? portStartText(o.name) : ''}${o.service.inetd ? sharedSandboxText(o) : ''}`;
}

/** What an inetd service's connections share under this runtime, and why. */
function sharedSandboxText(o: DeployBundleOptions): string {
  const t = o.service.timeout;
  return `

The sandbox is built once, not per connection: with \`Accept=yes\` systemd would fork PID 1 and
set up every namespace, mount and filter again for each connection, which on the simulated
board cost 50 to 70 ms of CPU per connection. So every connection is a fresh process, but the
connections share one sandbox: its scratch mounts (/tmp, /var/tmp, /run, /dev/shm), its user
and its cgroup. service.limits therefore bound all connections together, at ${ACCEPT_MAX_CONNECTIONS} times the
per-connection figures (what ${ACCEPT_MAX_CONNECTIONS} sandboxes of their own could use), and ${
    t === undefined
      ? 'no connection has a time limit'
      : `a connection's process gets SIGALRM after service.timeout (${Math.ceil(t)} s); a process it started itself lives on until it exits or the service stops`
  }. Choose \`deploy.runtime: nspawn\` for a container per connection.`;
}

/** Why a proxied daemon's unit runs one command outside its sandbox (see systemd-runtime.ts). */
function portStartText(name: string): string {
  return `

\`lhc-${name}\` has no capabilities, so it may bind port 1024 and above only. The unit's
\`ExecStartPre=+/bin/sh -c "echo 0 > ${UNPRIVILEGED_PORT_START}"\` lowers that limit
as root, outside the sandbox (\`+\`) but inside the unit's private network namespace, which holds
nothing but \`lo\`: the board's own limit does not change. The image has no shell, so
\`RootDirectoryStartOnly=yes\` runs only \`ExecStart=\` on the image and that one command with
the board's \`/bin/sh\`.`;
}

function nspawnRuntimeText(svc: string): string {
  return `## Runtime: nspawn (the default)

\`systemd-analyze security\` rates \`${svc}\` about 9.6 ("UNSAFE"; the build's score is in its
exposure.json): it reads only the unit's own directives, and this unit runs systemd-nspawn as
root with none, because nspawn needs those privileges to build the container. The confinement
nspawn sets up afterwards (read-only root, private network, user namespace, dropped capabilities,
no new privileges, its own system-call filter) is invisible to systemd-analyze; the hardening
rows of \`lhc verify\` read it from the live payload instead. \`deploy.runtime: systemd\` puts the
sandbox into the unit itself, where systemd-analyze sees it.`;
}
