declare module 'parse-prometheus-text-format' {
  /** Families as `{ name, help, type, metrics: [{ value | buckets+count+sum, labels }] }`. */
  export default function parsePrometheusTextFormat(text: string): unknown[];
}
