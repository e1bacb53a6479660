/** "1.2 MiB": a byte count rounded for reading (exact below 1 KiB). */
export function humanBytes(bytes: number): string {
  let v = bytes;
  let unit = 'B';
  for (const u of ['KiB', 'MiB', 'GiB']) {
    if (v < 1024) break;
    v /= 1024;
    unit = u;
  }
  return unit === 'B' ? `${bytes} B` : `${v.toFixed(1)} ${unit}`;
}
