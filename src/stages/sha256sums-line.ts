/**
 * One line of a SHA256SUMS file exactly as GNU `sha256sum` writes it, so `sha256sum -c` reads it
 * back on the board. Unit names such as `var-lib-lhc-my\x2dservice-data.mount` carry a backslash:
 * coreutils then marks the line with a leading `\` and escapes `\`, newline and carriage return
 * in the name.
 */
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r' };

export function sha256sumsLine(sha256: string, name: string): string {
  if (!/[\\\n\r]/.test(name)) return `${sha256}  ${name}`;
  return `\\${sha256}  ${name.replace(/[\\\n\r]/g, (c) => ESCAPES[c]!)}`;
}
