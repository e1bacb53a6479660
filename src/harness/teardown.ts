/**
 * The end of a verify run: stops the activator and forwarder, kills what is left of the
 * container (also payloads orphaned by a SIGKILLed nspawn), releases the machine name, the limit
 * cgroups, the mounts and the loop device, and removes the work dir. Every step is tried; what
 * failed is reported together.
 */
import type { Logger } from '../core/logger.js';
import { sleep } from '../core/wait.js';
import { removeLimitCgroups } from './limits.js';
import { releaseMachineName } from './machine-name.js';
import { containerProcesses, killPid, releaseLoop, removeWorkDir, unmount } from './mounts.js';
import { alive } from './proc.js';
import type { RunState } from './service.js';

/** Tears everything down; safe to call twice and after a partial set-up. */
export async function teardown(state: RunState, image: string, logger: Logger): Promise<void> {
  for (const s of state.sockets) s.destroy();
  state.sockets.clear();
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`);
    }
  };
  // A payload orphaned by a SIGKILLed nspawn keeps the activator's stderr pipe open, so waiting
  // for the activator to "exit" would wait for the payload: bound every wait, sweep, wait again.
  const bounded = (p: Promise<unknown>, ms: number) => Promise.race([p, sleep(ms)]);
  const stopping = Promise.all([state.forwarder?.stop(), state.service?.stop()]);
  await attempt('stop service', async () => void (await bounded(stopping, 1_000)));
  // nspawn killed hard (SIGKILL, e.g. by killAllGroups) leaves its payload running in its own
  // pid namespace: kill what we saw, then anything whose root is still our image.
  await attempt('kill payloads', async () => {
    for (const p of state.payloads) if (alive(p)) await killPid(p.pid);
    if (state.image) {
      for (let round = 0; round < 50; round++) {
        const left = await containerProcesses(state.image.majorMinor);
        if (left.length === 0) return;
        for (const pid of left) await killPid(pid);
        await sleep(100);
      }
      throw new Error(
        `container processes still running: ${(await containerProcesses(state.image.majorMinor)).join(' ')}`,
      );
    }
  });
  await attempt('stop service', async () => void (await bounded(stopping, 5_000)));
  await attempt('collect service log', async () => {
    const exited = state.service?.exited;
    if (!exited) return;
    const r = await Promise.race([exited, sleep(5_000).then(() => undefined)]);
    if (r === undefined) throw new Error(`${state.service!.command} did not exit`);
    state.serviceStderr = r.stderr;
  });
  if (state.identity) {
    const name = state.identity.machineName;
    await attempt('release machine name', () => releaseMachineName(name));
  }
  const cgroups = state.limitCgroups;
  if (cgroups) await attempt('remove limit cgroups', () => removeLimitCgroups(cgroups, logger));
  await attempt('unmount data', () => unmount(state.dataDir, logger));
  await attempt('unmount image', () => unmount(state.rootDir, logger));
  if (state.image) {
    const dev = state.image.loopDevice;
    await attempt('release loop device', () => releaseLoop(dev, image, logger));
  }
  await attempt('remove work dir', () =>
    removeWorkDir(state.workDir, [state.rootDir, state.dataDir]),
  );
  if (problems.length) throw new Error(`verify cleanup incomplete:\n${problems.join('\n')}`);
}
