/**
 * The artifact upload, including one real upload through @actions/artifact's DefaultArtifactClient
 * (zip, Azure block upload, Twirp calls) into a local stand-in for the results service: this
 * proves the library runs on the Node version the tests use, and that the zip holds our files
 * under names relative to the out dir.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  artifactName,
  artifactPlan,
  commonRoot,
  uploadArtifacts,
} from '../../src/action/artifacts.js';
import type { BuildResult } from '../../src/build-result.js';
import { UserError } from '../../src/core/errors.js';
import { memoryLogger } from '../../src/core/logger.js';

let dir: string;
let out: string;

function result(): BuildResult {
  return {
    name: 'gophermoon',
    outDir: out,
    image: path.join(out, 'gophermoon.squashfs'),
    imageSha256: '0'.repeat(64),
    imageBytes: 4,
    dataTemplate: path.join(out, 'gophermoon-data.tar'),
    dataTemplateSha256: '1'.repeat(64),
    manifest: path.join(out, 'gophermoon.manifest'),
    sha256sums: path.join(out, 'SHA256SUMS'),
    bundleDir: path.join(out, 'bundle'),
    traceReport: path.join(out, 'trace', 'report.json'),
    bytesBefore: 10,
    bytesAfter: 5,
    filesKept: 3,
    timings: [],
  };
}

const FILES: Record<string, string> = {
  'gophermoon.squashfs': 'hsqs',
  'gophermoon-data.tar': 'data',
  'gophermoon.manifest': '/bin/lua\n',
  SHA256SUMS: 'sums\n',
  'trace/report.json': '{}',
  'bundle/gophermoon.socket': '[Socket]\n',
  'bundle/gophermoon@.service': '[Service]\n',
  'bundle/oci/config.json': '{"ociVersion":"1.0.2"}',
};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lhc-artifacts-'));
  out = path.join(dir, 'out');
  for (const [rel, text] of Object.entries(FILES)) {
    await mkdir(path.dirname(path.join(out, rel)), { recursive: true });
    await writeFile(path.join(out, rel), text);
  }
  // Not part of the build's outputs: must not be uploaded.
  await writeFile(path.join(out, 'unrelated.log'), 'x');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('artifactName', () => {
  it('defaults to lhc-<name> and takes the input when given', () => {
    expect(artifactName(undefined, { name: 'gophermoon' })).toBe('lhc-gophermoon');
    expect(artifactName('  ', { name: 'gophermoon' })).toBe('lhc-gophermoon');
    expect(artifactName('board-image', { name: 'gophermoon' })).toBe('board-image');
  });
  it('refuses names the artifact service would reject, naming the character', () => {
    expect(() => artifactName('a/b', { name: 'x' })).toThrow(UserError);
    expect(() => artifactName('a:b', { name: 'x' })).toThrow('contains ":"');
  });
});

describe('artifactPlan', () => {
  it('holds the build outputs and every bundle file, relative to their common root', async () => {
    const plan = await artifactPlan(result(), 'lhc-gophermoon');
    expect(plan.rootDirectory).toBe(out);
    expect(plan.files.map((f) => path.relative(out, f))).toEqual(Object.keys(FILES).sort());
  });
  it('names a missing output', async () => {
    const r = { ...result(), manifest: path.join(out, 'missing.manifest') };
    await expect(artifactPlan(r, 'x')).rejects.toThrow(
      `build output ${path.join(out, 'missing.manifest')} is missing`,
    );
  });
  it('computes the deepest common directory', () => {
    expect(commonRoot(['/a/b/c/f1', '/a/b/d/f2'])).toBe('/a/b');
    expect(commonRoot(['/a/b/f1'])).toBe('/a/b');
    expect(commonRoot(['/x/f', '/y/g'])).toBe('/');
  });
});

describe('uploadArtifacts', () => {
  it('skips with a notice outside GitHub', async () => {
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (
      lines.push(String(chunk)),
      true
    )) as typeof process.stdout.write;
    let report;
    try {
      report = await uploadArtifacts(result(), memoryLogger(), { env: {} });
    } finally {
      process.stdout.write = write;
    }
    expect(report).toEqual({
      name: 'lhc-gophermoon',
      uploaded: false,
      files: 8,
      skipped: 'no artifact service',
    });
    expect(lines.join('')).toMatch(
      /^::notice::artifacts: no artifact service outside GitHub Actions; the 8 files stay in /m,
    );
  });

  it('does nothing when turned off', async () => {
    const report = await uploadArtifacts(result(), memoryLogger(), { enabled: false, env: {} });
    expect(report.uploaded).toBe(false);
    expect(report.skipped).toBe('turned off by input');
  });

  it('wraps an upload failure with the artifact name', async () => {
    const fail = async () => {
      throw new Error('boom');
    };
    await expect(uploadArtifacts(result(), memoryLogger(), { upload: fail })).rejects.toThrow(
      'artifact upload of lhc-gophermoon failed: boom',
    );
  });
});

/** Names and contents of the entries of a zip archive (stored or deflated). */
function unzip(zip: Buffer): Map<string, string> {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error('not a zip archive');
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const method = zip.readUInt16LE(p + 10);
    const size = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const local = zip.readUInt32LE(p + 42);
    const name = zip.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const data = zip.subarray(start, start + size);
    if (!name.endsWith('/'))
      out.set(name, (method === 8 ? inflateRawSync(data) : data).toString('utf8'));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('uploadArtifacts through DefaultArtifactClient', () => {
  let server: Server;
  const blocks = new Map<string, Buffer>();
  let committed: Buffer | undefined;
  const twirp: { method: string; body: Record<string, unknown> }[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      void (async () => {
        const url = new URL(req.url!, 'http://127.0.0.1');
        const data = await body(req);
        const twirpMatch =
          /^\/twirp\/github\.actions\.results\.api\.v1\.ArtifactService\/(\w+)$/.exec(url.pathname);
        if (req.method === 'POST' && twirpMatch) {
          const method = twirpMatch[1]!;
          twirp.push({
            method,
            body: JSON.parse(data.toString('utf8')) as Record<string, unknown>,
          });
          res.setHeader('content-type', 'application/json');
          const port = (server.address() as AddressInfo).port;
          if (method === 'CreateArtifact') {
            res.end(
              JSON.stringify({
                ok: true,
                signedUploadUrl: `http://127.0.0.1:${port}/devstoreaccount1/artifacts/upload.zip?sig=secret`,
              }),
            );
          } else if (method === 'FinalizeArtifact') {
            res.end(JSON.stringify({ ok: true, artifactId: '4242' }));
          } else {
            res.statusCode = 404;
            res.end('{"msg":"unknown method"}');
          }
          return;
        }
        // Azure block blob protocol: stage blocks, then commit the block list.
        if (req.method === 'PUT' && url.searchParams.get('comp') === 'block') {
          blocks.set(url.searchParams.get('blockid')!, data);
        } else if (req.method === 'PUT' && url.searchParams.get('comp') === 'blocklist') {
          const ids = [
            ...data.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]+)</g),
          ].map((m) => m[1]!);
          committed = Buffer.concat(ids.map((id) => blocks.get(id)!));
        } else if (req.method === 'PUT') {
          committed = data;
        } else {
          res.statusCode = 400;
          res.end();
          return;
        }
        res.statusCode = 201;
        res.setHeader('etag', '"0x1"');
        res.setHeader('last-modified', new Date().toUTCString());
        res.setHeader('x-ms-request-id', 'r1');
        res.setHeader('x-ms-version', '2024-08-04');
        res.end();
      })();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('zips the plan and uploads it through the results service protocol', async () => {
    const port = (server.address() as AddressInfo).port;
    const claims = Buffer.from(JSON.stringify({ scp: 'Actions.Results:run-1:job-1' })).toString(
      'base64url',
    );
    const keep = { ...process.env };
    Object.assign(process.env, {
      ACTIONS_RUNTIME_TOKEN: `e30.${claims}.sig`,
      ACTIONS_RESULTS_URL: `http://127.0.0.1:${port}/`,
      GITHUB_SERVER_URL: 'https://github.com',
      GITHUB_WORKSPACE: dir,
    });
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = (() => true) as typeof process.stdout.write;
    let report;
    try {
      report = await uploadArtifacts(result(), memoryLogger(), {});
    } finally {
      process.stdout.write = write;
      for (const k of Object.keys(process.env)) if (!(k in keep)) delete process.env[k];
      Object.assign(process.env, keep);
    }
    expect(twirp.map((t) => t.method)).toEqual(['CreateArtifact', 'FinalizeArtifact']);
    expect(twirp[0]!.body).toMatchObject({
      workflow_run_backend_id: 'run-1',
      workflow_job_run_backend_id: 'job-1',
      name: 'lhc-gophermoon',
    });
    expect(report).toMatchObject({ name: 'lhc-gophermoon', uploaded: true, files: 8, id: 4242 });
    expect(committed, 'blob upload committed').toBeDefined();
    expect(report!.size).toBe(committed!.length);
    const entries = unzip(committed!);
    expect(Object.fromEntries(entries)).toEqual(FILES);
  });
});
