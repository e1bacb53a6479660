import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  joinGuest,
  parseHostStrace,
  parseQemuStrace,
  qemuExitStatus,
  qemuCalls,
  type TraceEvent,
} from '../../src/trace/parse-strace.js';

const FIXTURES = path.join(import.meta.dirname, '../../fixtures/trace');
const fixture = (name: string) => readFileSync(path.join(FIXTURES, name), 'utf8');

const find = (events: TraceEvent[], op: string, p: string) =>
  events.filter((e) => e.op === op && e.path === p);

describe('QEMU_STRACE, real captures (see fixtures/trace/README.md)', () => {
  const files = parseQemuStrace(fixture('qemu-busybox-files.log'), { entrypoint: '/bin/busybox' });
  const sh = parseQemuStrace(fixture('qemu-busybox-sh.log'), { entrypoint: '/bin/busybox' });

  it('maps busybox re-execs of /proc/self/exe to the real executable', () => {
    const execs = files.events.filter((e) => e.op === 'exec' && e.result === 'ok');
    expect(execs.length).toBeGreaterThan(10);
    expect(new Set(execs.map((e) => e.path))).toEqual(new Set(['/bin/busybox']));
  });

  it('records a failed execve with its errno', () => {
    expect(find(files.events, 'exec', '/bin/nonexist')).toEqual([
      expect.objectContaining({ result: 'error', errno: 2 }),
    ]);
  });

  it('resolves a relative open against the cwd the shell chdir-ed to before forking', () => {
    // `cd /srv && busybox cat ./hello`: the child inherits /srv as its cwd.
    const opens = find(files.events, 'open', '/srv/hello');
    expect(opens).toHaveLength(1);
    expect(opens[0]!.result).toBe('ok');
    expect(find(files.events, 'chdir', '/srv')).toHaveLength(1);
  });

  it('sees directory listings and lstat-style lookups', () => {
    expect(find(files.events, 'getdents', '/srv').length).toBeGreaterThan(0);
    const st = find(files.events, 'stat', '/srv/hello');
    expect(st.some((e) => e.noFollow === true)).toBe(true);
    expect(find(files.events, 'readlink', '/bin/cat')[0]).toMatchObject({
      result: 'ok',
      noFollow: true,
    });
  });

  it('marks writes: rename both ends, unlink, rmdir, symlink creation, O_CREAT', () => {
    expect(find(files.events, 'rename-from', '/data/x/f')[0]).toMatchObject({
      write: true,
      result: 'ok',
    });
    expect(find(files.events, 'rename-to', '/data/x/g')[0]).toMatchObject({
      write: true,
      result: 'ok',
    });
    expect(find(files.events, 'unlink', '/data/x/g')[0]).toMatchObject({ write: true });
    expect(find(files.events, 'rmdir', '/data/x')[0]).toMatchObject({
      write: true,
      syscall: 'unlinkat',
    });
    expect(find(files.events, 'symlink', '/data/l')[0]).toMatchObject({ write: true });
    expect(find(files.events, 'open', '/data/t')[0]).toMatchObject({ write: true, result: 'ok' });
    expect(find(files.events, 'open', '/srv/hello')[0]!.write).toBe(false);
  });

  it('records failed lookups with ENOENT', () => {
    expect(find(files.events, 'open', '/etc/passwd')[0]).toMatchObject({
      result: 'error',
      errno: 2,
    });
  });

  it("splits torn lines: a call glued to the end of another process's pending call", () => {
    // `1 wait4(...)3 rt_sigaction(...)` and `3 execve(...)3 brk(NULL) = ...` appear in the capture.
    const text = fixture('qemu-busybox-sh.log');
    expect(text).toMatch(/\)3 rt_sigaction\(/);
    const calls = qemuCalls(text).calls;
    expect(calls.some((c) => c.pid === 3 && c.name === 'rt_sigaction')).toBe(true);
    expect(calls.some((c) => c.pid === 3 && c.name === 'brk')).toBe(true);
  });

  it('follows the shell script in the sh capture: cd, relative cat in a background job, fds from exec 5<', () => {
    expect(find(sh.events, 'open', '/srv/hello').length).toBeGreaterThanOrEqual(3);
    expect(find(sh.events, 'open', '/tmp/l')).toHaveLength(1);
    expect(find(sh.events, 'symlink', '/tmp/l')[0]).toMatchObject({ write: true, result: 'ok' });
    expect(find(sh.events, 'mkdir', '/data/x')[0]).toMatchObject({ result: 'error', errno: 17 });
    expect(find(sh.events, 'open', '/data/x/f')[0]).toMatchObject({ write: true });
    // `cat hello &` after `cd /srv`: the relative name resolves against the inherited cwd.
    expect(sh.events.some((e) => e.path === '/hello' || e.path === 'hello')).toBe(false);
  });
});

describe('QEMU_STRACE, synthetic edge cases', () => {
  const parse = (lines: string[], opts = {}) =>
    parseQemuStrace(lines.join('\n'), { entrypoint: '/bin/lua', ...opts }).events;

  it('resolves openat relative to a directory fd, and keeps the fd through dup/dup2/dup3/fcntl', () => {
    const ev = parse([
      '1 openat(AT_FDCWD,"/gopher",O_RDONLY|O_DIRECTORY) = 3',
      '1 openat(3,"gophermap",O_RDONLY) = 4',
      '1 dup(3) = 5',
      '1 openat(5,"moon/phases.txt",O_RDONLY) = 6',
      '1 dup3(3,7,O_CLOEXEC) = 7',
      '1 close(3) = 0',
      '1 openat(3,"lost",O_RDONLY) = -1 errno=9 (Bad file descriptor)',
      '1 openat(7,"about.txt",O_RDONLY) = 8',
      '1 fcntl(7,F_DUPFD_CLOEXEC,10) = 10',
      '1 newfstatat(10,"sub",0x5500800838,AT_SYMLINK_NOFOLLOW) = 0',
    ]);
    expect(ev.map((e) => e.path)).toEqual([
      '/gopher',
      '/gopher/gophermap',
      '/gopher/moon/phases.txt',
      '/gopher/about.txt',
      '/gopher/sub',
    ]);
    expect(ev.at(-1)).toMatchObject({ op: 'stat', noFollow: true });
  });

  it('fchdir and chdir change the cwd; relative paths keep `..` for the resolver', () => {
    const ev = parse([
      '1 openat(AT_FDCWD,"/srv/www",O_RDONLY|O_DIRECTORY) = 3',
      '1 fchdir(3) = 0',
      '1 openat(AT_FDCWD,"index.html",O_RDONLY) = 4',
      '1 chdir("../cgi") = 0',
      '1 faccessat(AT_FDCWD,"./run",X_OK,0) = 0',
    ]);
    expect(ev.map((e) => `${e.op} ${e.path}`)).toEqual([
      'open /srv/www',
      'open /srv/www/index.html',
      'chdir /srv/www/../cgi',
      'access /srv/www/../cgi/run',
    ]);
  });

  it('a forked child inherits cwd and fds from the process that called clone', () => {
    const ev = parse([
      '1 chdir("/var/www") = 0',
      '1 openat(AT_FDCWD,"/etc",O_RDONLY|O_DIRECTORY) = 3',
      '1 clone(CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|0x11,child_stack=0x0000000000000000,parent_tidptr=0x0,tls=0x0,child_tidptr=0x5da0d0) = 7',
      '7 openat(AT_FDCWD,"page",O_RDONLY) = 4',
      '7 openat(3,"hosts",O_RDONLY) = 5',
    ]);
    expect(ev.map((e) => e.path)).toEqual(['/var/www', '/etc', '/var/www/page', '/etc/hosts']);
    expect(ev.map((e) => e.pid)).toEqual([1, 1, 7, 7]);
  });

  it('skips lines it does not know: nspawn messages, signals, orphan results, unknown syscalls', () => {
    const ev = parse([
      'Spawning container root on /tmp/x.',
      '--- SIGCHLD {si_signo=SIGCHLD, si_code=1, si_pid=3} ---',
      ' = 3',
      '1 Unknown syscall 293',
      '1 openat(AT_FDCWD,"/a",O_RDONLY) = 3',
      '',
    ]);
    expect(ev).toHaveLength(1);
  });

  it('a result lost to interleaving is unknown, not success or failure', () => {
    const ev = parse(['1 openat(AT_FDCWD,"/slow",O_RDONLY)2 getpid() = 2', ' = 3']);
    expect(ev).toEqual([expect.objectContaining({ path: '/slow', result: 'unknown' })]);
  });

  it("a successful execve whose line carries another process's result still counts as an exec", () => {
    // Real: `26 execve("/proc/self/exe",{...}) = 26` where `= 26` was the parent's clone result.
    const ev = parse(['26 execve("/usr/sbin/nginx",{"nginx",NULL}) = 26']);
    expect(ev).toEqual([
      expect.objectContaining({ op: 'exec', path: '/usr/sbin/nginx', result: 'ok' }),
    ]);
  });

  it('understands *at flags printed as hex and AT_REMOVEDIR', () => {
    const ev = parse([
      '1 newfstatat(AT_FDCWD,"/l",0x55,0x100) = 0',
      '1 unlinkat(AT_FDCWD,"/data/d",AT_REMOVEDIR) = 0',
      '1 openat(AT_FDCWD,"/n",O_RDONLY|O_NOFOLLOW) = 3',
      '1 statx(AT_FDCWD,"/s",AT_STATX_SYNC_AS_STAT,STATX_BASIC_STATS,0x55) = 0',
    ]);
    expect(ev.map((e) => [e.op, e.path, !!e.noFollow])).toEqual([
      ['stat', '/l', true],
      ['rmdir', '/data/d', true],
      ['open', '/n', true],
      ['stat', '/s', false],
    ]);
  });

  it('per-pid log files (QEMU_LOG_FILENAME with %d) can simply be concatenated', () => {
    const a = '1 openat(AT_FDCWD,"/a",O_RDONLY) = 3\n';
    const b = '5 openat(AT_FDCWD,"/b",O_WRONLY|O_CREAT|O_TRUNC,0666) = 3\n';
    const ev = parseQemuStrace(a + b).events;
    expect(ev.map((e) => [e.pid, e.path, e.write])).toEqual([
      [1, '/a', false],
      [5, '/b', true],
    ]);
  });

  it('joinGuest cleans `.` and `//` but keeps `..`', () => {
    expect(joinGuest('/srv', './a//b/../c')).toBe('/srv/a/b/../c');
    expect(joinGuest('/x', '/abs/./p')).toBe('/abs/p');
  });
});

describe('host strace -f', () => {
  it('keeps only the payload of an nspawn run: the process that execs the entrypoint, and its children', () => {
    const r = parseHostStrace(fixture('strace-nspawn-busybox.log'), {
      payloadExec: '/bin/busybox',
    });
    // nspawn's own setup (its host paths, cgroups) is gone.
    expect(
      r.events.some((e) => e.path.startsWith('/sys/fs/cgroup') || e.path.includes('systemd')),
    ).toBe(false);
    expect(r.events[0]).toMatchObject({ op: 'exec', path: '/bin/busybox', result: 'ok' });
    expect(find(r.events, 'open', '/srv/hello')).toEqual([
      expect.objectContaining({ result: 'ok', write: false }),
    ]);
    // The payload pid before its exec belongs to nspawn: none of its earlier opens appear.
    const all = parseHostStrace(fixture('strace-nspawn-busybox.log'));
    expect(all.events.length).toBeGreaterThan(r.events.length * 5);
  });

  it('joins <unfinished ...> and <... resumed> pieces and follows vfork children', () => {
    const r = parseHostStrace(fixture('strace-host-sh.log'), { payloadExec: '/usr/bin/sh' });
    // `cd /etc; cat hostname &`: a forked child opening a relative name in the inherited cwd.
    const opens = find(r.events, 'open', '/etc/hostname');
    expect(opens.length).toBeGreaterThanOrEqual(3);
    expect(find(r.events, 'exec', '/usr/bin/cat').length).toBeGreaterThanOrEqual(2);
    expect(r.events.some((e) => e.path === '/hostname' || e.path === '/tmp/tr/hostname')).toBe(
      false,
    );
  });

  it('decodes C escapes and errno names', () => {
    const r = parseHostStrace(
      [
        '10  execve("/bin/svc", ["/bin/svc"], 0x7ffd /* 3 vars */) = 0',
        '10  openat(AT_FDCWD, "/srv/a \\"b\\"\\n\\303\\251", O_RDONLY) = -1 ENOENT (No such file or directory)',
        '10  openat(AT_FDCWD, "/etc/x", O_RDONLY <unfinished ...>',
        '11  +++ exited with 0 +++',
        '10  <... openat resumed>) = -1 EACCES (Permission denied)',
        '10  mkdirat(AT_FDCWD, "/data/run", 0755) = 0',
      ].join('\n'),
      { payloadExec: '/bin/svc' },
    );
    expect(r.events.map((e) => [e.op, e.path, e.result, e.errno])).toEqual([
      ['exec', '/bin/svc', 'ok', undefined],
      ['open', '/srv/a "b"\né', 'error', 2],
      ['open', '/etc/x', 'error', 13],
      ['mkdir', '/data/run', 'ok', undefined],
    ]);
  });
});

describe('qemuExitStatus (a pooled connection’s first process)', () => {
  it('finds the exit_group of the first process, also after a piece of another call', () => {
    expect(qemuExitStatus('3 set_tid_address(1) = 3\n3 exit_group(3)\n')).toEqual({
      first: 3,
      status: 3,
    });
    // QEMU writes execve's arguments one by one; another process's line may land among them.
    expect(
      qemuExitStatus(
        '3 set_tid_address(1) = 3\n5 execve("/bin/busybox",{"/bin/busybox",3 exit_group(0)\n"sleep",NULL})\n',
      ),
    ).toEqual({ first: 3, status: 0 });
  });
  it('has no status for a process killed by a signal, and nothing for an empty stream', () => {
    expect(qemuExitStatus('3 set_tid_address(1) = 3\n5 exit_group(0)\n')).toEqual({ first: 3 });
    expect(qemuExitStatus('13 exit_group(1)\n3 brk(NULL) = 0\n')).toEqual({ first: 13, status: 1 });
    expect(qemuExitStatus('')).toEqual({});
  });
});
