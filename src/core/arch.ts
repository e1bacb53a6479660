import os from 'node:os';

/** This machine's architecture in the config's words ('aarch64', 'x86_64'). */
export function hostArch(): string {
  const a = os.arch();
  return a === 'arm64' ? 'aarch64' : a === 'x64' ? 'x86_64' : a;
}
