/**
 * A count with thousands separators, as `toLocaleString('en-US')` writes an integer ("8,192"),
 * rounded to a whole number. By hand because the first Intl call of a process loads ICU's data
 * (~25–40 ms of CPU), and the CLI wrote counts into the help of every job command: each
 * `embedq status` paid for it.
 */
export function formatCount(value: number): string {
  const rounded = Math.round(value);
  const digits = String(Math.abs(rounded)).replace(/\B(?=(\d{3})+$)/g, ',');
  return rounded < 0 ? `-${digits}` : digits;
}
