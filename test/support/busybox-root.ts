/**
 * A small Alpine-shaped aarch64 directory root for trace/prune tests, built from Debian's
 * busybox-static:arm64 (real aarch64 code, run through binfmt/QEMU): /bin/busybox with applet
 * symlinks both relative (/bin/sh -> busybox) and absolute (/bin/cat -> /bin/busybox), as Alpine
 * has them, some content, and the package's docs as something a prune must drop.
 */
import { chmod, cp, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { debianDeb, extractDeb } from './debian-inputs.js';

export interface BusyboxRootOptions {
  /** Debian architecture of busybox-static; default arm64 (amd64 gives a native root on x86_64 hosts). */
  debArch?: 'arm64' | 'amd64';
  /** Extra files, in-root path → content. */
  files?: Record<string, string | Buffer>;
}

/** Builds the root at `dir` (must not exist yet, or is replaced). */
export async function busyboxRoot(dir: string, opts: BusyboxRootOptions = {}): Promise<string> {
  const deb = await debianDeb(`busybox-static:${opts.debArch ?? 'arm64'}`);
  const tmp = await mkdtemp(path.join(path.dirname(dir), '.bb-'));
  try {
    await extractDeb(deb, tmp);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    for (const d of [
      'bin',
      'sbin',
      'etc',
      'usr/bin',
      'usr/sbin',
      'srv',
      'www',
      'var/log',
      'root',
      'data',
    ]) {
      await mkdir(path.join(dir, d), { recursive: true });
    }
    await cp(path.join(tmp, 'bin/busybox'), path.join(dir, 'bin/busybox'));
    await chmod(path.join(dir, 'bin/busybox'), 0o755);
    // Debian's package ships docs under /usr/share: real bytes that no service reads.
    await cp(path.join(tmp, 'usr/share'), path.join(dir, 'usr/share'), { recursive: true });
    await mkdir(path.join(dir, 'tmp'), { mode: 0o1777 });
    await chmod(path.join(dir, 'tmp'), 0o1777);
    for (const applet of ['sh', 'ls', 'echo', 'sleep'])
      await symlink('busybox', path.join(dir, 'bin', applet));
    for (const applet of ['cat', 'mkdir'])
      await symlink('/bin/busybox', path.join(dir, 'bin', applet));
    await symlink('/bin/busybox', path.join(dir, 'usr/bin/env'));
    await symlink('/bin/busybox', path.join(dir, 'usr/sbin/httpd'));
    const files: Record<string, string | Buffer> = {
      '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n',
      '/etc/group': 'root:x:0:\nnobody:x:65534:\n',
      '/etc/hostname': 'busybox-root\n',
      '/srv/hello': 'hello from the traced root\n',
      '/srv/unused': 'nobody reads this\n',
      '/www/index.html': '<html><body>busybox httpd in a pruned root</body></html>\n',
      '/www/unused.html': '<p>never requested</p>\n',
      ...opts.files,
    };
    for (const [p, content] of Object.entries(files)) {
      await mkdir(path.join(dir, path.dirname(p)), { recursive: true });
      await writeFile(path.join(dir, p), content);
    }
    return dir;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
