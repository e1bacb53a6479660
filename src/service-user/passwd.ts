/**
 * service.user resolved the way systemd's User= does (uid, primary gid, supplementary groups,
 * home), from the root's own /etc/passwd and /etc/group text: never the host's, and before
 * pruning, since the pruned image carries neither file.
 */

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** The ids and identity the payload runs with. */
export interface RunAs {
  /** The user name (the number itself for a uid the root's passwd does not list). */
  name: string;
  uid: number;
  gid: number;
  /** Supplementary groups: the primary gid first, then every group listing the user. */
  groups: number[];
  home: string;
}

const MAX_ID = 0xfffffffe;

function id(field: string | undefined): number | undefined {
  if (field === undefined || !/^\d{1,10}$/.test(field)) return undefined;
  const n = Number(field);
  return n <= MAX_ID ? n : undefined;
}

/** passwd(5) lines; comments, NIS `+`/`-` lines and lines with bad ids are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || /^[+-]/.test(line)) continue;
    const f = line.split(':');
    const uid = id(f[2]);
    const gid = id(f[3]);
    if (f.length < 7 || !f[0] || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0], uid, gid, home: f[5] || '/' });
  }
  return out;
}

/** group(5) lines, skipped like parsePasswd's. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#') || /^[+-]/.test(line)) continue;
    const f = line.split(':');
    const gid = id(f[2]);
    if (f.length < 4 || !f[0] || gid === undefined) continue;
    out.push({ name: f[0], gid, members: f[3]!.split(',').filter(Boolean) });
  }
  return out;
}

/** True for root (no privileges to drop: the payload runs as nspawn starts it). */
export function isRootUser(user: string | number | undefined): boolean {
  return user === undefined || user === 0 || user === '0' || user === 'root';
}

/**
 * The ids for `user` (a name, or a uid as a number or digit string), or why there are none.
 * A uid that passwd does not list runs with gid = uid, no other groups and HOME=/ (what a
 * numeric uid means on a root without a user database); a name must be listed.
 */
export function resolveUser(
  user: string | number,
  passwd: string | undefined,
  group: string | undefined,
): { runAs: RunAs } | { problem: string } {
  const users = passwd === undefined ? [] : parsePasswd(passwd);
  const numeric = typeof user === 'number' || /^\d+$/.test(user);
  let entry: PasswdEntry | undefined;
  if (numeric) {
    const uid = Number(user);
    if (!Number.isSafeInteger(uid) || uid > MAX_ID)
      return { problem: `uid ${user} is out of range (at most ${MAX_ID})` };
    entry = users.find((u) => u.uid === uid) ?? {
      name: String(uid),
      uid,
      gid: uid,
      home: '/',
    };
  } else {
    if (passwd === undefined)
      return {
        problem: `"${user}": the root has no /etc/passwd to look the name up in (add one with files:, or give a numeric uid)`,
      };
    entry = users.find((u) => u.name === user);
    if (!entry) return { problem: `"${user}" is not a user in the root's /etc/passwd` };
  }
  const groups = [entry.gid];
  for (const g of group === undefined ? [] : parseGroup(group))
    if (g.members.includes(entry.name) && !groups.includes(g.gid)) groups.push(g.gid);
  return { runAs: { name: entry.name, uid: entry.uid, gid: entry.gid, groups, home: entry.home } };
}

/** What nspawn's --user and systemd's User= put in the environment. */
export function runAsEnv(r: RunAs): Record<string, string> {
  return { HOME: r.home, LOGNAME: r.name, USER: r.name };
}
