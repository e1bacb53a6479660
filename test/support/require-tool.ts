import { hasTool } from '../../src/tools/exec.js';
import { packageFor } from '../../src/host/requirements.js';

/** A test that needs a missing host tool fails (never skips), naming the package to install. */
export async function requireTool(tool: string, pkg = packageFor(tool) ?? tool): Promise<void> {
  if (!(await hasTool(tool)))
    throw new Error(`${tool} is missing: apt-get install ${pkg} (or run: lhc setup)`);
}
