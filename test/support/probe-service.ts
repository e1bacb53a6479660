/**
 * A small project for probe tests: the Alpine-shaped aarch64 root as a tarball base,
 * test/support/probe-service.sh as the service under busybox sh (a GET is answered as HTTP/1.1
 * from /www, other lines are a tiny line protocol: PING → +PONG, ECHO text → text, anything else
 * → -ERR, answered until the client stops sending), and fixtures that protocol implies.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BuildResult } from '../../src/build-result.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger, type Logger } from '../../src/core/logger.js';
import { build, type BuildOptions } from '../../src/pipeline.js';
import { Store } from '../../src/store/store.js';
import { alpineLikeRootfs } from './alpine-like.js';

const SCRIPT = path.resolve(import.meta.dirname, 'probe-service.sh');
export const INDEX = 'index of the probe service\n';
export const NOT_FOUND = 'no such page\n';
export const PING_ECHO_SEND = 'PING\\r\\nECHO hello there\\r\\nBOO\\r\\n';
export const PING_ECHO_ANSWER = '+PONG\r\nhello there\r\n-ERR unknown command\r\n';

/** Fixture files (relative to the project) and their contents as the protocol defines them. */
export const FIXTURES: Record<string, string> = {
  'fixtures/index.txt': INDEX,
  'fixtures/404.txt': NOT_FOUND,
  'fixtures/ping-echo.txt': PING_ECHO_ANSWER,
  'fixtures/pong.txt': '+PONG\r\n',
};

/** Writes the project into `dir` (lhc.yml last) and returns the config path. */
export async function probeServiceProject(
  dir: string,
  o: { service: string; probes: string; fixtures?: boolean; extra?: string },
): Promise<string> {
  const alpine = await alpineLikeRootfs();
  copyFileSync(alpine.gz, path.join(dir, 'base.tar.gz'));
  copyFileSync(SCRIPT, path.join(dir, 'serve.sh'));
  mkdirSync(path.join(dir, 'www'));
  writeFileSync(path.join(dir, 'www/index.txt'), INDEX);
  writeFileSync(path.join(dir, 'www/404.txt'), NOT_FOUND);
  writeFileSync(path.join(dir, 'www/400.txt'), 'bad request\n');
  if (o.fixtures !== false) {
    mkdirSync(path.join(dir, 'fixtures'));
    for (const [f, content] of Object.entries(FIXTURES)) writeFileSync(path.join(dir, f), content);
  }
  const file = path.join(dir, 'lhc.yml');
  writeFileSync(
    file,
    `name: probe-service
base: {type: tarball, path: base.tar.gz}
files:
  - {src: serve.sh, dst: /srv/serve.sh, mode: "0644"}
  - {src: www, dst: /www}
service:
${o.service}
  timeout: 30
probes:
${o.probes}
${o.extra ?? ''}`,
  );
  return file;
}

export const INETD_SERVICE = '  command: [/bin/sh, /srv/serve.sh]\n  inetd: true';

/** Builds the project in `dir` (out/ and the store inside it). */
export async function buildProbeService(
  dir: string,
  configFile: string,
  o: Partial<BuildOptions> & { logger?: Logger } = {},
): Promise<BuildResult> {
  return build(await loadConfig(configFile), {
    outDir: path.join(dir, 'out'),
    logger: memoryLogger(),
    store: new Store(path.join(dir, 'store')),
    env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000' },
    ...o,
  });
}
