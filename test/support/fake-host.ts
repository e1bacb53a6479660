/** An in-memory HostProbe: a host described as data, so doctor and setup decide without a real one. */
import type { HostProbe } from '../../src/host/probe.js';

export interface FakeHost {
  arch?: string;
  root?: boolean;
  sudo?: boolean;
  files?: Record<string, string>;
  tools?: string[];
  foreignArchs?: string[];
  packages?: string[];
}

/** The binfmt_misc entry text the kernel shows for qemu-user-static's registration. */
export const QEMU_ENTRY_POF = `enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
`;

export const QEMU_CONF =
  ':qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n';

export function fakeProbe(h: FakeHost): HostProbe {
  const files = h.files ?? {};
  return {
    fileExists: async (f) => f in files,
    readFile: async (f) => files[f],
    listDir: async (dir) =>
      Object.keys(files)
        .filter((f) => f.startsWith(`${dir}/`) && !f.slice(dir.length + 1).includes('/'))
        .map((f) => f.slice(dir.length + 1))
        .sort(),
    which: async (tool) => ((h.tools ?? []).includes(tool) ? `/usr/bin/${tool}` : undefined),
    isRoot: () => h.root ?? true,
    sudoOk: async () => h.sudo ?? false,
    arch: () => h.arch ?? 'x86_64',
    foreignArchs: async () => h.foreignArchs ?? [],
    installedPackages: async (pkgs) => new Set(pkgs.filter((p) => (h.packages ?? []).includes(p))),
  };
}
