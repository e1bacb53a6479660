/**
 * lhc-accept: the systemd runtime's connection loop for inetd services, a static ELF of about
 * 700 bytes. With Accept=yes systemd would fork PID 1 and build the whole sandbox for every
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
import { staticElf, type Arch } from '../elf/static-elf.js';

/** Where the helper lives in the image (only images of inetd services under deploy.runtime: systemd). */
export const ACCEPT_PATH = '/usr/lib/lhc/lhc-accept';
/** Its process name: the service's main process, never a connection's payload. */
export const ACCEPT_COMM = 'lhc-accept';
/** Connections served at once, as the nspawn runtime's socket allows (MaxConnections=). */
export const ACCEPT_MAX_CONNECTIONS = 32;

export const ACCEPT_CODE: Record<Arch, string> = {
  aarch64:
    'f30340f97f1200f12b0b0054e00b40f960000094f40300aae00f40f95d000094600a00b4f50300aaf6830091f76f338b' +
    'f7420091180080d200008092010080d2220080d21f0315ebe223829a030080d2882080d2010000d41f0000f16d000054' +
    '180700d1f5ffff171f0315eb62feff54600080d2010080d2020080d20301a0d2481e80d2010000d40002f8b7f90300aa' +
    '200280d2010080d2020080d2030080d2040080d2881b80d2010000d4c00100b44000f8b718070091e00319aa280780d2' +
    '010000d4ddffff171f2400b1800400541f5800b1400400541f6001b100040054d6ffff17600080d2280780d2010000d4' +
    'e00319aa010080d2020080d2080380d2010000d4e00319aa210080d2080380d2010000d4340100b4ff8300d1ff7f00a9' +
    'f47f01a9000080d2e1030091020080d2e80c80d2010000d4c00240f9e10316aae20317aaa81b80d2010000d401080050' +
    'e20580d2e30f80d208000014e1040030a20a80d2230080d204000014c1020010a20680d2430080d2400080d2080880d2' +
    '010000d4e00303aac80b80d2010000d4e10300aa000080d22200403982feff34430180d222144038c200003442c00051' +
    '5f240071c8fdff540008039bfaffff17c0035fd66c68632d6163636570743a2075736167653a206c68632d6163636570' +
    '74205345434f4e4453204d415820434f4d4d414e442e2e2e0a6c68632d6163636570743a206e6f206c697374656e696e' +
    '6720736f636b6574206174206664203320287374617274206d652066726f6d206120736f636b657420756e6974207769' +
    '7468204163636570743d6e6f290a6c68632d6163636570743a2063616e6e6f7420657865637574652074686520736572' +
    '7669636520636f6d6d616e640a000000',
  x86_64:
    '488b1c244883fb040f8c51010000488b7c2410e86f0100004989c4488b7c2418e8620100004885c00f84310100004989' +
    'c54c8d7424204c8d7cdc1031db48c7c7ffffffff31f6ba0100000031c04c39eb0f43d04531d2b83d0000000f054885c0' +
    '7e0548ffcbebd64c39eb73d1bf0300000031f631d241ba00000800b8200100000f054885c078204889c5b8390000000f' +
    '054885c07434780348ffc34889efb8030000000f05eb964883f8f70f849a0000004883f8ea0f84900000004883f8a80f' +
    '8486000000e973ffffffbf03000000b8030000000f054889ef31f6b8210000000f054889efbe01000000b8210000000f' +
    '054d85e474314883ec2048c704240000000048c7442408000000004c8964241048c74424180000000031ff4889e631d2' +
    'b8260000000f05498b3e4c89f64c89fab83b0000000f05488d35f8000000ba2f00000041bc7f000000eb26488d358f00' +
    '0000ba5500000041bc01000000eb12488d3546000000ba3500000041bc02000000bf02000000b8010000000f054c89e7' +
    'b8e70000000f0531c00fb60f85c974cf0fb60f48ffc785c9741183e93083f90977bd486bc00a4801c8ebe5c36c68632d' +
    '6163636570743a2075736167653a206c68632d616363657074205345434f4e4453204d415820434f4d4d414e442e2e2e' +
    '0a6c68632d6163636570743a206e6f206c697374656e696e6720736f636b657420617420666420332028737461727420' +
    '6d652066726f6d206120736f636b657420756e69742077697468204163636570743d6e6f290a6c68632d616363657074' +
    '3a2063616e6e6f74206578656375746520746865207365727669636520636f6d6d616e640a0f1f00',
};

/** Only inetd services under deploy.runtime: systemd run through it; other images stay as they were. */
export function needsAcceptLoop(config: {
  service: { inetd?: boolean | undefined };
  deploy: { runtime: string };
}): boolean {
  return config.service.inetd === true && config.deploy.runtime === 'systemd';
}

export function acceptElf(arch: Arch): Buffer {
  return staticElf(arch, Buffer.from(ACCEPT_CODE[arch], 'hex'));
}

/** The unit's command line: the loop, then the service command it runs per connection. */
export function acceptArgv(
  command: readonly string[],
  timeoutSeconds: number | undefined,
): string[] {
  const seconds = timeoutSeconds === undefined ? 0 : Math.ceil(timeoutSeconds);
  return [ACCEPT_PATH, String(seconds), String(ACCEPT_MAX_CONNECTIONS), ...command];
}
