// Builds dist/ with esbuild: dist/index.js (the action) and dist/cli.js (the lhc binary), each
// one self-contained ESM file, so neither needs node_modules at run time.
// `--check` builds in memory and compares byte for byte with dist/, exiting 1 when they differ.
import { build } from 'esbuild';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8'));

// CommonJS dependencies call require() for Node built-ins; an ESM bundle has no require.
const requireShim = [
  "import { createRequire as __lhcCreateRequire } from 'node:module';",
  'const require = __lhcCreateRequire(import.meta.url);',
].join('\n');

const targets = [
  { entry: 'src/action/index.ts', out: 'index.js', banner: requireShim, executable: false },
  {
    entry: 'src/cli-entry.ts',
    out: 'cli.js',
    banner: `#!/usr/bin/env node\n${requireShim}`,
    executable: true,
  },
];

async function bundle(t) {
  const r = await build({
    absWorkingDir: root,
    entryPoints: [t.entry],
    outfile: path.join(dist, t.out),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    mainFields: ['module', 'main'],
    // node_modules may be a symlink (git worktrees share one): keep its path as written, so the
    // bundle's module comments, and so its bytes, do not depend on where the checkout lives.
    preserveSymlinks: true,
    banner: { js: t.banner },
    define: { LHC_VERSION_DEFINE: JSON.stringify(pkg.version) },
    legalComments: 'none',
    sourcemap: false,
    minify: false,
    write: false,
    logLevel: 'warning',
  });
  if (r.outputFiles.length !== 1) throw new Error(`expected one output for ${t.entry}`);
  return r.outputFiles[0].contents;
}

async function readOrUndefined(file) {
  try {
    return await readFile(file);
  } catch {
    return undefined;
  }
}

const check = process.argv.includes('--check');
const differing = [];
for (const t of targets) {
  const bytes = await bundle(t);
  const file = path.join(dist, t.out);
  if (check) {
    const current = await readOrUndefined(file);
    if (!current || !Buffer.from(bytes).equals(current)) differing.push(`dist/${t.out}`);
  } else {
    await mkdir(dist, { recursive: true });
    await writeFile(file, bytes);
    if (t.executable) await chmod(file, 0o755);
    console.log(`dist/${t.out}: ${bytes.length} bytes`);
  }
}
if (check) {
  if (differing.length > 0) {
    console.error(`dist/ is out of date with src/: ${differing.join(', ')}\nrun: npm run bundle`);
    process.exit(1);
  }
  console.log('dist/ matches src/');
}
