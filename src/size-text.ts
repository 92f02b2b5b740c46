// Bytes as a person reads them ("3.9 MiB"), for every display that shows a size or a rate: the
// progress line, `tsdump show` and the HTML report. Loads nothing, so `--help` can use it too.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function sizeText(bytes: bigint | number): string {
  let v = Number(bytes);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) [v, u] = [v / 1024, u + 1];
  // a rate may be a fraction of a byte
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}
