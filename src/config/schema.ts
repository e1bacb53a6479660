/**
 * The lhc.yml schema. Every object is strict: a misspelt key is an error, never silently ignored.
 * Paths in the config (files[].src, probes' fixtures, tarball path, data template) are relative
 * to the config file's directory; load.ts resolves them.
 */
import { z } from 'zod';

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 hex characters');
/** A download's size cap (bytes), overriding the store's default hard cap for one input. */
const maxBytes = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const url = z.string().regex(/^(https?|file):\/\/\S+$/, 'expected an http(s):// or file:// URL');
/** Why `p` cannot be a path at all (control characters, over-long names), or undefined. */
function pathShapeProblem(p: string): string | undefined {
  // Checked before anything else, so a newline is reported as a newline (the ".." check below
  // cannot see past it) and a 300-byte name never reaches the file system as ENAMETOOLONG.
  const at = [...p].findIndex((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f);
  if (at !== -1) {
    const c = [...p][at]!;
    const NAMES: Record<string, string> = {
      '\n': 'a newline',
      '\0': 'a NUL byte',
      '\r': 'a carriage return',
      '\t': 'a tab',
    };
    const name = NAMES[c] ?? `control character 0x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
    return `a path cannot contain ${name}`;
  }
  if (Buffer.byteLength(p) > 4095) return 'a path longer than 4095 bytes';
  if (p.split('/').some((c) => Buffer.byteLength(c) > 255))
    return 'a path component is longer than 255 bytes';
  return undefined;
}

/** A path string of a sane shape; where it points is checked when the config is loaded (confine.ts). */
const pathString = z
  .string()
  .min(1)
  .superRefine((p, ctx) => {
    const problem = pathShapeProblem(p);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
const absPath = z.string().superRefine((p, ctx) => {
  const problem =
    pathShapeProblem(p) ??
    (!p.startsWith('/') || /(^|\/)\.\.(\/|$)/.test(p)
      ? 'expected an absolute path without ".."'
      : undefined);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
/** Mount points nspawn itself owns: a data directory there would hide them or fail to mount. */
const RESERVED_DATA_PATHS = /^\/(proc|sys|dev|run|tmp)?\/*$/;
// YAML 1.2 reads a bare `mode: 0755` as the decimal number 755: a number is taken digit by digit as
// the octal mode the user wrote, and refused when its digits cannot be octal.
const mode = z
  .union([
    z.string().regex(/^0?[0-7]{3,4}$/, 'expected an octal mode such as "0755"'),
    z
      .number()
      .int()
      .refine(
        (n) => /^[0-7]{3,4}$/.test(String(n)),
        'expected an octal mode such as "0755" (quote it)',
      ),
  ])
  .transform((m) => parseInt(String(m), 8));

export const luaSchema = z.strictObject({
  version: z
    .string()
    .regex(/^5\.[34]\.\d+$/, 'expected a Lua 5.3.x or 5.4.x version such as "5.4.4"'),
  sha256,
  urls: z.array(url).min(1).optional(),
  strategy: z.enum(['cross', 'in-root']).default('cross'),
  /** Where the interpreter is installed in the image. */
  path: absPath.default('/bin/lua'),
  'max-bytes': maxBytes.optional(),
});

export const scratchBase = z.strictObject({ type: z.literal('scratch') });
export const tarballBase = z
  .strictObject({
    type: z.literal('tarball'),
    path: pathString.optional(),
    urls: z.array(url).min(1).optional(),
    sha256: sha256.optional(),
    'max-bytes': maxBytes.optional(),
  })
  .superRefine((b, ctx) => {
    if (!b.path && !b.urls)
      ctx.addIssue({ code: 'custom', message: 'give either path or urls', path: ['path'] });
    if (b.urls && !b.sha256)
      ctx.addIssue({ code: 'custom', message: 'required with urls', path: ['sha256'] });
  });
export const debianBase = z.strictObject({
  type: z.literal('debian'),
  suite: z
    .string()
    .regex(/^[a-z]+$/, 'expected a Debian suite name such as "bookworm"')
    .default('bookworm'),
  packages: z
    .array(z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, 'expected a Debian package name'))
    .default([]),
  variant: z.enum(['minbase', 'essential', 'apt']).default('minbase'),
  /** Extra mmdebstrap mirror/sources lines; default: the host's apt sources. */
  mirrors: z.array(z.string()).optional(),
});
export const baseSchema = z.discriminatedUnion('type', [scratchBase, tarballBase, debianBase]);

export const fileSchema = z.strictObject({
  src: pathString,
  dst: absPath,
  mode: mode.optional(),
});

export const dataSchema = z.strictObject({
  path: absPath
    .refine(
      (p) => !RESERVED_DATA_PATHS.test(p.replace(/\/+$/, '') || '/'),
      'the data directory cannot be "/", /proc, /sys, /dev, /run or /tmp',
    )
    .default('/data'),
  /** A directory whose contents seed the writable data template. */
  template: pathString.optional(),
});

const port = z.number().int().min(1).max(65535);

const MEMORY_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
/** A memory size: bytes, or a number with K, M or G (powers of 1024), as systemd's MemoryMax= reads it. */
const memorySize = z
  .union([
    z.number().int(),
    z
      .string()
      .regex(/^\d+[KMG]?$/, 'expected a size such as "256M" (K, M or G) or a number of bytes'),
  ])
  .transform((v) => {
    if (typeof v === 'number') return v;
    const m = /^(\d+)([KMG]?)$/.exec(v)!;
    return Number(m[1]) * MEMORY_UNITS[m[2]!]!;
  })
  .refine((n) => n >= 16 * 1024 ** 2, 'at least 16M: QEMU and nspawn alone need about that')
  .refine((n) => n <= 2 ** 50, 'at most 1P');

/**
 * What one container may use. The defaults fit the board: 2 GB of RAM and up to 32 connections
 * at once (MaxConnections) gives each container 256M with room for the host; 64 tasks count
 * nspawn and QEMU's threads too.
 */
export const limitsSchema = z.strictObject({
  memory: memorySize.default(256 * 1024 ** 2),
  tasks: z.number().int().min(8).max(65536).default(64),
  /** CPU time in percent of one core (CPUQuota=). */
  cpu: z.number().int().min(1).max(100_000).default(100),
  /** Open files (RLIMIT_NOFILE, LimitNOFILE=). */
  nofile: z.number().int().min(64).max(1_048_576).default(1024),
});
export const DEFAULT_LIMITS = limitsSchema.parse({});

export const serviceSchema = z
  .strictObject({
    command: z.array(z.string().min(1)).min(1),
    /**
     * Who the payload runs as: a name in the root's /etc/passwd, or a uid. Resolved at build time
     * from the unpruned root (stages/service-user.ts); root (0) drops nothing.
     */
    user: z
      .union([
        z
          .string()
          .regex(
            /^([A-Za-z_][A-Za-z0-9_.-]{0,31}|\d{1,10})$/,
            'expected a user name (letters, digits, "_", ".", "-"; at most 32) or a numeric uid',
          ),
        z.number().int().min(0).max(0xfffffffe),
      ])
      .default(0),
    env: z.record(z.string(), z.string()).default({}),
    workdir: absPath.optional(),
    inetd: z.boolean().optional(),
    listen: port.optional(),
    /**
     * The daemon takes its listening socket from systemd (LISTEN_FDS, sd_listen_fds) instead of
     * binding `listen` itself; the board then passes the socket straight into the container.
     */
    'socket-activation': z.boolean().default(false),
    /** Seconds a traced or verified run may take before it is killed. */
    timeout: z.number().positive().default(60),
    limits: limitsSchema.default(() => ({ ...DEFAULT_LIMITS })),
    /**
     * Exit codes besides 0 that end an inetd connection normally (systemd's SuccessExitStatus=):
     * many inetd servers answer an unknown request and then exit 1.
     */
    'success-exit-status': z.array(z.number().int().min(0).max(255)).optional(),
  })
  .superRefine((s, ctx) => {
    if (s['success-exit-status'] !== undefined && !s.inetd)
      ctx.addIssue({
        code: 'custom',
        message:
          'only for inetd services (service.inetd: true): a listening service is not restarted per connection',
        path: ['success-exit-status'],
      });
    if (!!s.inetd === (s.listen !== undefined))
      ctx.addIssue({
        code: 'custom',
        message: 'set exactly one of inetd: true or listen: PORT',
        path: ['inetd'],
      });
    if (s['socket-activation'] && s.listen === undefined)
      ctx.addIssue({
        code: 'custom',
        message:
          'socket-activation passes a listening socket to the daemon: it needs listen: PORT (an inetd service already gets its connection on stdin)',
        path: ['socket-activation'],
      });
    if (!s.command[0]!.startsWith('/'))
      ctx.addIssue({
        code: 'custom',
        message: 'the entrypoint must be an absolute path in the image',
        path: ['command', 0],
      });
  });

const probeName = z
  .string()
  .regex(/^[\w.-]+$/, 'expected a name of letters, digits, ".", "_" or "-"');

export const gopherProbe = z.strictObject({
  name: probeName,
  type: z.literal('gopher'),
  /** The selector sent, without CRLF; a search is "selector\tquery". */
  selector: z.string().default(''),
  /** Expected response, byte for byte. */
  fixture: pathString,
});
export const httpProbe = z.strictObject({
  name: probeName,
  type: z.literal('http'),
  path: z
    .string()
    .startsWith('/', 'expected a path starting with "/"')
    .refine(
      (p) => /^[\x21-\x7e]*$/.test(p),
      'a request path is printable ASCII without spaces (percent-encode the rest)',
    )
    .default('/'),
  status: z.number().int().min(100).max(599).default(200),
  /** Expected body, byte for byte (optional). */
  fixture: pathString.optional(),
});

/**
 * Bytes written as a YAML string: each character is one byte (U+0000 to U+00FF), so a
 * double-quoted "PING\r\n" or "\x00\xff" means exactly those bytes.
 */
const byteString = z
  .string()
  .min(1, 'send at least one byte')
  .superRefine((s, ctx) => {
    const wide = [...s].find((ch) => ch.codePointAt(0)! > 0xff);
    if (wide !== undefined)
      ctx.addIssue({
        code: 'custom',
        message: `character U+${wide.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')} is not a byte: write each byte as "\\xNN" in a double-quoted string`,
      });
  });

/** How long a tcp probe waits for more bytes once the answer has started (seconds). */
export const DEFAULT_TCP_IDLE_SECONDS = 2;

/**
 * A raw TCP exchange for any line protocol: `send` is written, the write side is shut down
 * (half-close, unless `half-close: false`), and the response is every byte until the peer closes
 * or, once the first byte has arrived, until `idle-timeout` seconds pass without another.
 */
export const tcpProbe = z.strictObject({
  name: probeName,
  type: z.literal('tcp'),
  send: byteString,
  /** Expected response, byte for byte. */
  fixture: pathString,
  'half-close': z.boolean().default(true),
  'idle-timeout': z.number().positive().max(600).default(DEFAULT_TCP_IDLE_SECONDS),
});
export const probeSchema = z.discriminatedUnion('type', [gopherProbe, httpProbe, tcpProbe]);

/** The bytes a tcp probe sends (its `send` string, one byte per character). */
export function tcpSendBytes(probe: { send: string }): Buffer {
  return Buffer.from(probe.send, 'latin1');
}

/** An artifact file name: one path component, not one lhc writes itself. */
const outputName = z
  .string()
  .regex(/^[\w.-]+$/, 'expected a file name of letters, digits, ".", "_" or "-"')
  .refine((n) => n !== '.' && n !== '..', 'expected a file name, not "." or ".."')
  .refine(
    (n) =>
      n !== 'SHA256SUMS' &&
      n !== 'deploy' &&
      !n.endsWith('.trace.json') &&
      !n.endsWith('.exposure.json'),
    'that name is taken by SHA256SUMS, deploy/, the trace report or the exposure scores',
  )
  .refine((n) => !n.startsWith('.lhc-'), 'names starting with ".lhc-" are lhc\'s own markers');

export const outputsSchema = z
  .strictObject({
    dir: pathString.default('out'),
    image: outputName.optional(),
    'data-template': outputName.optional(),
    manifest: outputName.optional(),
  })
  .superRefine((o, ctx) => {
    const names = [o.image, o['data-template'], o.manifest].filter((n) => n !== undefined);
    for (const key of ['data-template', 'manifest'] as const) {
      const n = o[key];
      if (n !== undefined && names.indexOf(n) !== names.lastIndexOf(n))
        ctx.addIssue({ code: 'custom', message: `"${n}" names two outputs`, path: [key] });
    }
  });

/**
 * Probes that cannot work against this service. An inetd service reads its request from stdin,
 * which ends after the request: a tcp probe there always half-closes.
 */
function probeServiceMismatches(
  c: {
    service: { inetd?: boolean | undefined; timeout: number };
    probes: z.output<typeof probeSchema>[];
  },
  ctx: z.RefinementCtx,
): void {
  c.probes.forEach((p, i) => {
    if (p.type !== 'tcp') return;
    if (c.service.inetd && !p['half-close'])
      ctx.addIssue({
        code: 'custom',
        message:
          'an inetd service reads the request from its stdin, which ends after send: half-close: false needs service.listen',
        path: ['probes', i, 'half-close'],
      });
    if (p['idle-timeout'] >= c.service.timeout)
      ctx.addIssue({
        code: 'custom',
        message: `idle-timeout (${p['idle-timeout']} s) must be shorter than service.timeout (${c.service.timeout} s)`,
        path: ['probes', i, 'idle-timeout'],
      });
  });
}

/**
 * How the board runs the image: `nspawn` (a systemd-nspawn container per connection) or
 * `systemd` (a sandboxed systemd service with RootDirectory= on the mounted image, no nspawn).
 */
export const RUNTIMES = ['nspawn', 'systemd'] as const;
export type Runtime = (typeof RUNTIMES)[number];
/** Warm containers an inetd service keeps under the nspawn runtime by default (see WARM_MAX). */
export const DEFAULT_WARM_CONTAINERS = 8;
/** As many as the nspawn runtime's old per-connection socket allowed at once (MaxConnections=). */
export const WARM_MAX = 32;
export const deploySchema = z.strictObject({
  runtime: z.enum(RUNTIMES).default('nspawn'),
  /**
   * nspawn runtime, inetd services: containers started ahead of their connection, each serving
   * exactly one and then replaced, so a connection does not wait for a container to start; also
   * how many connections are served at once. 0: a container is started per connection on arrival
   * (Accept=yes). Ignored elsewhere.
   */
  'warm-containers': z.number().int().min(0).max(WARM_MAX).default(DEFAULT_WARM_CONTAINERS),
});

const rootCommand = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

export const configSchema = z
  .strictObject({
    name: z
      .string()
      .regex(
        /^[a-z0-9][a-z0-9-]{0,62}$/,
        'expected lower-case letters, digits and "-" (a unit name)',
      ),
    arch: z.enum(['aarch64', 'x86_64']).default('aarch64'),
    /** Unix time for reproducible timestamps; SOURCE_DATE_EPOCH overrides it. */
    epoch: z.number().int().min(0).optional(),
    lua: luaSchema.optional(),
    base: baseSchema.default({ type: 'scratch' }),
    /**
     * A command run inside the root (under QEMU in nspawn) after the base is laid down, e.g.
     * `apk add nginx`: a string through the root's /bin/sh, or a list as argv.
     */
    prepare: rootCommand.optional(),
    /** The old name of `prepare`, easily confused with base.packages (a list): still read, with a warning. */
    packages: rootCommand.optional(),
    files: z.array(fileSchema).default([]),
    data: dataSchema.default({ path: '/data' }),
    service: serviceSchema,
    probes: z
      .array(probeSchema)
      .min(1)
      .superRefine((probes, ctx) => {
        // Responses, fixtures and report rows are keyed by name: two probes must never share one.
        const seen = new Map<string, number>();
        probes.forEach((p, i) => {
          const first = seen.get(p.name);
          if (first === undefined) seen.set(p.name, i);
          else
            ctx.addIssue({
              code: 'custom',
              message: `duplicate probe name "${p.name}" (also probes[${first}])`,
              path: [i, 'name'],
            });
        });
      }),
    keep: z.array(z.string().min(1)).default([]),
    drop: z.array(z.string().min(1)).default([]),
    outputs: outputsSchema.default({ dir: 'out' }),
    deploy: deploySchema.default({
      runtime: 'nspawn',
      'warm-containers': DEFAULT_WARM_CONTAINERS,
    }),
    /** The root of the simulated board `lhc verify --board` boots, instead of lhc's Debian one. */
    board: z
      .strictObject({
        /** An uncompressed tar of a root with systemd, systemd-container, e2fsprogs, squashfs-tools. */
        tarball: z.string().min(1),
        sha256,
      })
      .optional(),
  })
  .superRefine((c, ctx) => {
    probeServiceMismatches(c, ctx);
    if (c.prepare !== undefined && c.packages !== undefined)
      ctx.addIssue({
        code: 'custom',
        message: 'packages is the old name of prepare: give only prepare',
        path: ['packages'],
      });
  });

export type LhcConfigInput = z.input<typeof configSchema>;
/** The config as written, validated and with defaults applied (paths not yet resolved). */
export type LhcConfigRaw = z.output<typeof configSchema>;
export type Probe = z.output<typeof probeSchema>;
export type GopherProbe = z.output<typeof gopherProbe>;
export type HttpProbe = z.output<typeof httpProbe>;
export type TcpProbe = z.output<typeof tcpProbe>;
export type Base = z.output<typeof baseSchema>;
export type LuaSpec = z.output<typeof luaSchema>;
export type ServiceLimits = z.output<typeof limitsSchema>;
