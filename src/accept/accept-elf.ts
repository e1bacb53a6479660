/**
 * lhc-accept: the systemd runtime's connection loop for inetd services, a static ELF of about
 * 1000 bytes. With Accept=yes systemd would fork PID 1 and build the whole sandbox for every
 * connection (50 to 70 ms of CPU on the simulated board, see README.md); instead the unit's one
 * sandbox runs this loop on the listening socket (Accept=no) and every connection gets a fresh
 * process of the service command, with the connection as stdin and stdout, SIGALRM after
 * service.timeout, and at most MAX of them at once.
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
    'f30340f97f1200f1eb130054e00b40f9a6000094f40300aae00f40f9a3000094201300b4f50300aaf6830091f76f338b' +
    'f7420091180080d2ff8300d180008052e01700b9600080d2210080d2c20380d2e3430091e4530091281a80d2010000d4' +
    'a010f8b7e01340b960100034000088d2e07f00a9000080d2e1030091020080d2030180d2e81080d2010000d400008092' +
    'e1030091020180d20301a0d2480980d2010000d4000ef8b7fa0300aa00008092010080d2220080d21f0315ebe223829a' +
    '030080d2882080d2010000d41f0000f16d000054180700d1f5ffff171f0315eb62feff54600080d2210080d2217c60d3' +
    '000001aa420301aae00b01a9e0430091410080d2020080d2030080d2040180d2280980d2010000d4a0fcffb7e03f4079' +
    '00040035e02f407920fcff34600080d2010080d2020080d20301a0d2481e80d2010000d40002f8b7f90300aa200280d2' +
    '010080d2020080d2030080d2040080d2881b80d2010000d4600300b44000f8b718070091e00319aa280780d2010000d4' +
    'cbffff171f2400b1600700541f5800b1200700541f6001b1e0060054c4ffff17600080d2280780d2010000d400008092' +
    '010080d2020080d2030080d2882080d2010000d440ffffb6000080d2c80b80d2010000d4600080d2280780d2010000d4' +
    '400080d2e1230091020080d2030180d2e81080d2010000d4e00319aa010080d2020080d2080380d2010000d4e00319aa' +
    '210080d2080380d2010000d4340100b4ff8300d1ff7f00a9f47f01a9000080d2e1030091020080d2e80c80d2010000d4' +
    'c00240f9e10316aae20317aaa81b80d2010000d4010a0050e20580d2e30f80d20c00001401080050020680d2230080d2' +
    '08000014e1040030a20a80d2230080d204000014c1020010a20680d2430080d2400080d2080880d2010000d4e00303aa' +
    'c80b80d2010000d4e10300aa000080d22200403982feff34430180d222144038c200003442c000515f240071c8fdff54' +
    '0008039bfaffff17c0035fd66c68632d6163636570743a2075736167653a206c68632d616363657074205345434f4e44' +
    '53204d415820434f4d4d414e442e2e2e0a6c68632d6163636570743a206e6f206c697374656e696e6720736f636b6574' +
    '206174206664203320287374617274206d652066726f6d206120736f636b657420756e69742077697468204163636570' +
    '743d6e6f290a6c68632d6163636570743a2063616e6e6f7420776174636820666f72205349475445524d20287369676e' +
    '616c6664290a6c68632d6163636570743a2063616e6e6f74206578656375746520746865207365727669636520636f6d' +
    '6d616e640a000000',
  x86_64:
    '488b1c244883fb040f8c85020000488b7c2410e8a30200004989c4488b7c2418e8960200004885c00f84650200004989' +
    'c54c8d7424204c8d7cdc1031db4883ec20c744241404000000bf03000000be01000000ba1e0000004c8d5424104c8d44' +
    '2414b8370000000f054885c00f880d020000837c2410000f840202000048c704240040000048c74424080000000031ff' +
    '4889e631d241ba08000000b80e0000000f0548c7c7ffffffff4889e6ba0800000041ba00000800b8210100000f054885' +
    'c00f88a40100004989c048c7c7ffffffff31f6ba0100000031c04c39eb0f43d04531d2b83d0000000f054885c07e0548' +
    'ffcbebd64c39eb73d1c744241003000000c7442414010000004489442418c744241c01000000488d7c2410be02000000' +
    'baffffffffb8070000000f054885c0789966837c241e00756966837c2416007489bf0300000031f631d241ba00000800' +
    'b8200100000f054885c078234889c5b8390000000f054885c07466780348ffc34889efb8030000000f05e94bffffff48' +
    '83f8f70f84f60000004883f8ea0f84ec0000004883f8a80f84e2000000e928ffffffbf03000000b8030000000f0548c7' +
    'c7ffffffff31f631d24531d2b83d0000000f054885c079e631ffb8e70000000f05bf03000000b8030000000f05bf0200' +
    '0000488d74240831d241ba08000000b80e0000000f054889ef31f6b8210000000f054889efbe01000000b8210000000f' +
    '054d85e474314883ec2048c704240000000048c7442408000000004c8964241048c74424180000000031ff4889e631d2' +
    'b8260000000f05498b3e4c89f64c89fab83b0000000f05488d353c010000ba2f00000041bc7f000000eb3a488d35f800' +
    '0000ba3000000041bc01000000eb26488d358f000000ba5500000041bc01000000eb12488d3546000000ba3500000041' +
    'bc02000000bf02000000b8010000000f054c89e7b8e70000000f0531c00fb60f85c974cf0fb60f48ffc785c9741183e9' +
    '3083f90977bd486bc00a4801c8ebe5c36c68632d6163636570743a2075736167653a206c68632d616363657074205345' +
    '434f4e4453204d415820434f4d4d414e442e2e2e0a6c68632d6163636570743a206e6f206c697374656e696e6720736f' +
    '636b6574206174206664203320287374617274206d652066726f6d206120736f636b657420756e697420776974682041' +
    '63636570743d6e6f290a6c68632d6163636570743a2063616e6e6f7420776174636820666f72205349475445524d2028' +
    '7369676e616c6664290a6c68632d6163636570743a2063616e6e6f742065786563757465207468652073657276696365' +
    '20636f6d6d616e640a0f1f8000000000',
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
