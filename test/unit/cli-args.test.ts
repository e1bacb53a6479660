import { describe, expect, it } from 'vitest';
import { parseArgs, wantsHelp, type Command } from '../../src/cli/command.js';
import { ConfigError } from '../../src/core/errors.js';
import { formatCommand } from '../../src/tools/exec.js';

const spec: Pick<Command, 'name' | 'options' | 'positionals'> = {
  name: 'build',
  options: {
    out: { type: 'string', short: 'o' },
    'no-verify': { type: 'boolean' },
    'manifest-lock': { type: 'string' },
  },
  positionals: { min: 1, max: 1, names: 'CONFIG' },
};

function usageError(args: string[]): ConfigError {
  try {
    parseArgs(args, spec);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a usage error');
}

describe('parseArgs', () => {
  it('reads --flag value, --flag=value, -f value, booleans and positionals', () => {
    expect(parseArgs(['lhc.yml', '--out', 'o1'], spec)).toEqual({
      options: { out: 'o1' },
      positionals: ['lhc.yml'],
    });
    expect(parseArgs(['--out=a=b', 'x.yml'], spec).options.out).toBe('a=b');
    expect(parseArgs(['-o', 'dir', 'x.yml'], spec).options.out).toBe('dir');
    expect(parseArgs(['x.yml', '--no-verify'], spec).options['no-verify']).toBe(true);
    expect(parseArgs(['--manifest-lock', 'm.lock', 'x.yml'], spec).options['manifest-lock']).toBe(
      'm.lock',
    );
  });

  it('every command takes --verbose/-v, --quiet/-q and --help; only --json commands take --json', () => {
    expect(parseArgs(['x.yml', '-v', '--quiet'], spec).options).toEqual({
      verbose: true,
      quiet: true,
    });
    expect(() => parseArgs(['x.yml', '--json'], spec)).toThrow('unknown option --json');
    expect(parseArgs(['x.yml', '--json'], { ...spec, json: true }).options.json).toBe(true);
  });

  it('takes everything after -- as positional, even if it looks like a flag', () => {
    expect(parseArgs(['--', '--weird.yml'], spec).positionals).toEqual(['--weird.yml']);
    expect(parseArgs(['--', '--weird.yml'], spec).options).toEqual({});
  });

  it('an empty value is a value', () => {
    expect(parseArgs(['x.yml', '--out='], spec).options.out).toBe('');
  });

  it.each([
    [['x.yml', '--bogus'], 'lhc build: unknown option --bogus (see: lhc build --help)'],
    [['x.yml', '-z'], 'lhc build: unknown option -z (see: lhc build --help)'],
    [['x.yml', '--out'], 'lhc build: option --out needs a value (see: lhc build --help)'],
    [['x.yml', '-o'], 'lhc build: option --out needs a value (see: lhc build --help)'],
    [
      ['x.yml', '--out', '--no-verify'],
      'lhc build: option --out needs a value (see: lhc build --help)',
    ],
    [
      ['x.yml', '--no-verify=maybe'],
      'lhc build: option --no-verify takes no value (see: lhc build --help)',
    ],
    [['--no-out', 'x.yml'], 'lhc build: unknown option --no-out (see: lhc build --help)'],
    [['--verify', 'x.yml'], 'lhc build: unknown option --verify (see: lhc build --help)'],
    [[], 'lhc build: missing CONFIG (see: lhc build --help)'],
    [['a.yml', 'b.yml'], 'lhc build: unexpected argument "b.yml" (see: lhc build --help)'],
  ])('%j is a usage error (exit 2)', (args, message) => {
    const e = usageError(args);
    expect(e.message).toBe(message);
    expect(e.exitCode).toBe(2);
  });

  it('commands without positionals refuse them', () => {
    expect(() => parseArgs(['extra'], { name: 'doctor' })).toThrow(
      'lhc doctor: unexpected argument "extra"',
    );
  });

  it('wantsHelp stops at --', () => {
    expect(wantsHelp(['x', '--help'])).toBe(true);
    expect(wantsHelp(['-h'])).toBe(true);
    expect(wantsHelp(['--', '--help'])).toBe(false);
    expect(wantsHelp(['x.yml'])).toBe(false);
  });
});

describe('exec command lines', () => {
  it('formatCommand quotes only what a shell would misread', () => {
    expect(formatCommand(['mksquashfs', '/tmp/root', 'img.squashfs', '-comp', 'xz'])).toBe(
      'mksquashfs /tmp/root img.squashfs -comp xz',
    );
    expect(formatCommand(['sh', '-c', 'echo $HOME; ls'])).toBe(`sh -c 'echo $HOME; ls'`);
    expect(formatCommand(['echo', "it's"])).toBe(`echo 'it'\\''s'`);
    expect(formatCommand(['printf', ''])).toBe(`printf ''`);
    expect(formatCommand(['--setenv=QEMU_STRACE=1'])).toBe('--setenv=QEMU_STRACE=1');
  });
});
