/**
 * lhc-accept: the systemd runtime's connection loop for inetd services, a static ELF of about
 * 1200 bytes. With Accept=yes systemd would fork PID 1 and build the whole sandbox for every
 * connection (50 to 70 ms of CPU on the simulated board, see README.md); instead the unit's one
 * sandbox runs this loop on the listening socket (Accept=no) and every connection gets a fresh
 * process of the service command, with the connection as stdin and stdout, SIGALRM after
 * service.timeout, and at most MAX of them at once: `lhc-accept SECONDS MAX COMMAND...`.
 *
 * MAX 0 is once mode: one connection, then exit 0 when its process has exited (not waiting for
 * any other: as a container's PID 1 it inherits them), for a unit with Restart=on-success or a
 * container per connection. SIGTERM before the connection exits at once, after it once that
 * process is done. The listening socket is set O_NONBLOCK, so several lhc-accepts may poll one:
 * those that lose a connection to another go back to poll (and hear SIGTERM) instead of blocking
 * in accept4.
 *
 * The code is accept.<arch>.S next to this file, assembled once and kept here as bytes:
 *   aarch64-linux-gnu-as -o a.o accept.aarch64.S && aarch64-linux-gnu-objcopy -O binary -j .text a.o a.bin
 *   as -o x.o accept.x86_64.S && objcopy -O binary -j .text x.o x.bin
 * (test/integration/accept.test.ts assembles them again and compares.)
 */
import { DEFAULT_WARM_CONTAINERS } from '../config/schema.js';
import { staticElf, type Arch } from '../elf/static-elf.js';

/** Where the helper lives in the image (only images of inetd services that need it, needsAcceptLoop). */
export const ACCEPT_PATH = '/usr/lib/lhc/lhc-accept';
/** Its process name: the service's main process, never a connection's payload. */
export const ACCEPT_COMM = 'lhc-accept';
/** Connections served at once, as the nspawn runtime's socket allows (MaxConnections=). */
export const ACCEPT_MAX_CONNECTIONS = 32;

export const ACCEPT_CODE: Record<Arch, string> = {
  aarch64:
    'f30340f97f1200f1eb150054e00b40f9b6000094f40300aae00f40f9b30000941f0000f1fb179f9a15001b8bf6830091' +
    'f76f338bf7420091180080d2ff8300d180008052e01700b9600080d2210080d2c20380d2e3430091e4530091281a80d2' +
    '010000d48012f8b7e01340b940120034600080d2610080d2280380d2010000d4a011f8b7020075b2600080d2810080d2' +
    '280380d2010000d4000088d2e07f00a9000080d2e1030091020080d2030180d2e81080d2010000d400008092e1030091' +
    '020180d20301a0d2480980d2010000d4a00ef8b7fa0300aa00008092010080d2220080d21f0315ebe223829a030080d2' +
    '882080d2010000d41f0000f16d000054180700d1f5ffff171f0315eb62feff54600080d2210080d2217c60d3000001aa' +
    '420301aae00b01a9e0430091410080d2020080d2030080d2040180d2280980d2010000d4a0fcffb7e03f407960040035' +
    'e02f407920fcff34600080d2010080d2020080d20301a0d2481e80d2010000d46002f8b7f90300aa200280d2010080d2' +
    '020080d2030080d2040080d2881b80d2010000d4000400b44000f8b718070091fc0300aae00319aa280780d2010000d4' +
    '5bf9ffb4bc02f8b7090000141f2400b1a00700541f5800b1600700541f6001b120070054c1ffff171c008092600080d2' +
    '280780d2010000d4e0031caa010080d2020080d2030080d2882080d2010000d41f2800b121ffff54000080d2c80b80d2' +
    '010000d4600080d2280780d2010000d4400080d2e1230091020080d2030180d2e81080d2010000d4e00319aa010080d2' +
    '020080d2080380d2010000d4e00319aa210080d2080380d2010000d4340100b4ff8300d1ff7f00a9f47f01a9000080d2' +
    'e1030091020080d2e80c80d2010000d4c00240f9e10316aae20317aaa81b80d2010000d4c10a0050e20580d2e30f80d2' +
    '0c000014c1080050020680d2230080d208000014a1050030a20a80d2230080d204000014c1020010a20980d2430080d2' +
    '400080d2080880d2010000d4e00303aac80b80d2010000d4e10300aa000080d22200403982feff34430180d222144038' +
    'c200003442c000515f240071c8fdff540008039bfaffff17c0035fd66c68632d6163636570743a2075736167653a206c' +
    '68632d616363657074205345434f4e4453204d415820434f4d4d414e442e2e2e20284d415820303a206f6e6520636f6e' +
    '6e656374696f6e290a6c68632d6163636570743a206e6f206c697374656e696e6720736f636b65742061742066642033' +
    '20287374617274206d652066726f6d206120736f636b657420756e69742077697468204163636570743d6e6f290a6c68' +
    '632d6163636570743a2063616e6e6f7420776174636820666f72205349475445524d20287369676e616c6664290a6c68' +
    '632d6163636570743a2063616e6e6f74206578656375746520746865207365727669636520636f6d6d616e640a000000',
  x86_64:
    '488b1c244883fb040f8ccf020000488b7c2410e8ed0200004989c4488b7c2418e8e00200004531c94885c0410f94c14c' +
    '01c84989c54c8d7424204c8d7cdc1031db4883ec20c744241404000000bf03000000be01000000ba1e0000004c8d5424' +
    '104c8d442414b8370000000f054885c00f8853020000837c2410000f8448020000bf03000000be03000000b848000000' +
    '0f054885c00f882e020000bf03000000be040000004889c281ca00080000b8480000000f0548c704240040000048c744' +
    '24080000000031ff4889e631d241ba08000000b80e0000000f0548c7c7ffffffff4889e6ba0800000041ba00000800b8' +
    '210100000f054885c00f88b60100004989c048c7c7ffffffff31f6ba0100000031c04c39eb0f43d04531d2b83d000000' +
    '0f054885c07e0548ffcbebd64c39eb73d1c744241003000000c7442414010000004489442418c744241c01000000488d' +
    '7c2410be02000000baffffffffb8070000000f054885c0789966837c241e00757766837c2416007489bf0300000031f6' +
    '31d241ba00000800b8200100000f054885c078314889c5b8390000000f054885c07478780348ffc34889ef4889c5b803' +
    '0000000f054d85c90f8444ffffff4885ed784feb2a4883f8f70f84fa0000004883f8ea0f84f00000004883f8a80f84e6' +
    '000000e91affffff48c7c5ffffffffbf03000000b8030000000f054889ef31f631d24531d2b83d0000000f054883f8f6' +
    '75e931ffb8e70000000f05bf03000000b8030000000f05bf02000000488d74240831d241ba08000000b80e0000000f05' +
    '4889ef31f6b8210000000f054889efbe01000000b8210000000f054d85e474314883ec2048c704240000000048c74424' +
    '08000000004c8964241048c74424180000000031ff4889e631d2b8260000000f05498b3e4c89f64c89fab83b0000000f' +
    '05488d3554010000ba2f00000041bc7f000000eb3a488d3510010000ba3000000041bc01000000eb26488d35a7000000' +
    'ba5500000041bc01000000eb12488d3546000000ba4d00000041bc02000000bf02000000b8010000000f054c89e7b8e7' +
    '0000000f0531c00fb60f85c974cf0fb60f48ffc785c9741183e93083f90977bd486bc00a4801c8ebe5c36c68632d6163' +
    '636570743a2075736167653a206c68632d616363657074205345434f4e4453204d415820434f4d4d414e442e2e2e2028' +
    '4d415820303a206f6e6520636f6e6e656374696f6e290a6c68632d6163636570743a206e6f206c697374656e696e6720' +
    '736f636b6574206174206664203320287374617274206d652066726f6d206120736f636b657420756e69742077697468' +
    '204163636570743d6e6f290a6c68632d6163636570743a2063616e6e6f7420776174636820666f72205349475445524d' +
    '20287369676e616c6664290a6c68632d6163636570743a2063616e6e6f74206578656375746520746865207365727669' +
    '636520636f6d6d616e640a0f1f440000',
};

/**
 * Inetd services run through it under deploy.runtime: systemd (the unit's one loop), and under
 * nspawn with warm containers (each container's payload serves one connection with MAX 0);
 * other images stay as they were.
 */
export function needsAcceptLoop(config: {
  service: { inetd?: boolean | undefined };
  deploy: { runtime: string; 'warm-containers'?: number | undefined };
}): boolean {
  if (config.service.inetd !== true) return false;
  return config.deploy.runtime === 'systemd' || warmContainers(config.deploy) > 0;
}

/** deploy.warm-containers as the nspawn runtime uses it (0 under the systemd runtime). */
export function warmContainers(deploy: {
  runtime: string;
  'warm-containers'?: number | undefined;
}): number {
  if (deploy.runtime !== 'nspawn') return 0;
  return deploy['warm-containers'] ?? DEFAULT_WARM_CONTAINERS;
}

export function acceptElf(arch: Arch): Buffer {
  return staticElf(arch, Buffer.from(ACCEPT_CODE[arch], 'hex'));
}

/** The unit's command line: the loop, then the service command it runs per connection. */
export function acceptArgv(
  command: readonly string[],
  timeoutSeconds: number | undefined,
): string[] {
  return [ACCEPT_PATH, alarmSeconds(timeoutSeconds), String(ACCEPT_MAX_CONNECTIONS), ...command];
}

/** A warm container's payload: the helper serving exactly one connection (MAX 0), then exiting. */
export function acceptOnceArgv(
  command: readonly string[],
  timeoutSeconds: number | undefined,
): string[] {
  return [ACCEPT_PATH, alarmSeconds(timeoutSeconds), '0', ...command];
}

function alarmSeconds(timeoutSeconds: number | undefined): string {
  return String(timeoutSeconds === undefined ? 0 : Math.ceil(timeoutSeconds));
}
