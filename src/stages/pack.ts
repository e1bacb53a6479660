/**
 * pack: pruned root → read-only squashfs image, data template and manifest (SHA256SUMS over
 * them is the outputs stage's).
 * Same inputs give the same bytes on any machine, at any time, under any umask or TZ: the image
 * and the template take every time from `epoch` and every owner from a fixed value, and the
 * manifest holds no times at all.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { UserError } from '../core/errors.js';
import type { StageContext } from '../core/stage.js';
import { stageOutput, writeOutputFile } from '../core/safe-write.js';
import { scanTree, serializeManifest, type Manifest } from '../manifest/manifest.js';
import { sha256File } from '../store/store.js';
import { run } from '../tools/exec.js';
import { mksquashfsArgv, mksquashfsEnv, ROOT_MODE } from '../tools/mksquashfs.js';
import { writeDataTemplate, type Owner } from './data-template.js';

export interface PackInput {
  /** The pruned root directory. */
  root: string;
  /** The data directory to seed the data partition with; undefined gives an empty one. */
  dataDir?: string;
  /** Where the data partition is mounted in the container; default "/data". It must exist in the root. */
  dataPath?: string;
  name: string;
  epoch: number;
  /** Owner of the data template's top directory (service.user's ids); default 0:0. Its entries are always 0:0. */
  dataOwner?: Owner;
  /** Output names (config `outputs.*`); defaults <name>.squashfs, <name>-data.tar.gz, <name>.manifest.json. */
  fileNames?: { image?: string; dataTemplate?: string; manifest?: string };
}

export interface PackResult {
  image: string;
  imageSha256: string;
  imageBytes: number;
  dataTemplate: string;
  dataTemplateSha256: string;
  dataTemplateBytes: number;
  manifest: string;
  manifestSha256: string;
  /** The manifest itself, for the lock check and the report. */
  manifestData: Manifest;
}

export function artifactNames(name: string, fileNames: PackInput['fileNames'] = {}) {
  return {
    image: fileNames.image ?? `${name}.squashfs`,
    dataTemplate: fileNames.dataTemplate ?? `${name}-data.tar.gz`,
    manifest: fileNames.manifest ?? `${name}.manifest.json`,
  };
}

async function requireDir(dir: string, what: string): Promise<void> {
  let st;
  try {
    st = await lstat(dir);
  } catch {
    throw new UserError(`${what} ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new UserError(`${what} ${dir} is not a directory`);
}

/** Writes the image, the data template and the manifest into ctx.outDir. */
export async function packImage(ctx: StageContext, input: PackInput): Promise<PackResult> {
  const o = { ...input, outDir: ctx.outDir, logger: ctx.logger, signal: ctx.signal };
  const dataPath = o.dataPath ?? '/data';
  const names = artifactNames(o.name, o.fileNames);
  await requireDir(o.root, 'root');
  if (o.dataDir !== undefined) await requireDir(o.dataDir, 'data directory');
  // nspawn cannot create a mount point on a read-only root; better to fail here than on the board.
  const mountPoint = path.join(o.root, dataPath);
  try {
    if (!(await stat(mountPoint)).isDirectory()) throw new Error('not a directory');
  } catch {
    throw new UserError(
      `the root has no directory ${dataPath}: the data partition is mounted there and a read-only root cannot grow it`,
    );
  }
  await mkdir(o.outDir, { recursive: true });
  const image = path.join(o.outDir, names.image);
  const dataTemplate = path.join(o.outDir, names.dataTemplate);
  const manifestFile = path.join(o.outDir, names.manifest);

  o.logger.info(`packing ${o.root} into ${image} (squashfs, xz, epoch ${o.epoch})`);
  // mksquashfs runs on its own while the manifest's scan and the data template are made: the
  // three read the same trees and write different files.
  const squashed = stageOutput(
    image,
    (tmp) =>
      run(mksquashfsArgv({ source: o.root, image: tmp, epoch: o.epoch, rootMode: ROOT_MODE }), {
        env: mksquashfsEnv(),
        logger: o.logger,
        signal: o.signal,
      }),
    o.logger,
  );
  const rest = (async () => {
    const imageEntries = await scanTree(o.root, {
      mountPath: '/',
      owner: { uid: 0, gid: 0 },
      rootMode: ROOT_MODE,
    });
    const data = await writeDataTemplate({
      dataDir: o.dataDir,
      dataPath,
      epoch: o.epoch,
      out: dataTemplate,
      owner: { uid: 0, gid: 0 },
      ...(o.dataOwner ? { topOwner: o.dataOwner } : {}),
      logger: o.logger,
    });
    return { imageEntries, data };
  })();
  // Both settle before anything is reported; the image's failure is the one a sequential run met first.
  const [sq, other] = await Promise.allSettled([squashed, rest]);
  if (sq.status === 'rejected') throw sq.reason;
  if (other.status === 'rejected') throw other.reason;
  const { imageEntries, data } = other.value;

  const manifestData: Manifest = {
    lhcManifest: 1,
    name: o.name,
    image: imageEntries,
    data: { path: dataPath, entries: data.entries },
  };
  const manifestText = serializeManifest(manifestData);
  await writeOutputFile(manifestFile, manifestText, { logger: o.logger });

  const imageBytes = (await stat(image)).size;
  const imageSha256 = await sha256File(image);
  o.logger.info(
    `image ${imageBytes} bytes, data template ${data.bytes} bytes, ${imageEntries.length} paths`,
  );
  return {
    image,
    imageSha256,
    imageBytes,
    dataTemplate,
    dataTemplateSha256: data.sha256,
    dataTemplateBytes: data.bytes,
    manifest: manifestFile,
    manifestSha256: createHash('sha256').update(manifestText).digest('hex'),
    manifestData,
  };
}
