// The Prometheus text format as `GET /metrics` writes it, and what the health view computes
// from it: per-series sums, rates between two samples, and quantiles from histogram buckets.

/** Parses the text exposition format into `[{name, labels, value}]` (comments skipped). */
export function parse(text) {
  const out = [];
  for (const raw of String(text).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const sample = parseLine(line);
    if (sample) out.push(sample);
  }
  return out;
}

function parseLine(line) {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!m) return null;
  const name = m[1];
  let i = name.length;
  const labels = {};
  if (line[i] === '{') {
    i += 1;
    for (;;) {
      while (line[i] === ' ' || line[i] === ',') i += 1;
      if (line[i] === '}') {
        i += 1;
        break;
      }
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
      if (!lm) return null;
      i += lm[0].length;
      let v = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) return null;
        i += 1;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i];
          i += 1;
          v += e === 'n' ? '\n' : e;
        } else {
          v += c;
        }
      }
      labels[lm[1]] = v;
    }
  }
  const rest = line.slice(i).trim().split(/\s+/);
  const value = toNumber(rest[0]);
  if (value === null) return null;
  return { name, labels, value };
}

function toNumber(s) {
  if (s === undefined) return null;
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const n = Number(s);
  return Number.isNaN(n) ? null : n;
}

/** The key of one (tenant, extension). */
export function extKey(labels) {
  return `${labels.tenant || ''}\u0000${labels.extension || ''}`;
}

/**
 * Sums samples named `name` by (tenant, extension), keeping those `keep(labels)` accepts.
 * Returns a Map from `extKey` to the sum.
 */
export function sumByExtension(samples, name, keep = () => true) {
  const m = new Map();
  for (const s of samples) {
    if (s.name !== name || !keep(s.labels)) continue;
    const k = extKey(s.labels);
    m.set(k, (m.get(k) || 0) + s.value);
  }
  return m;
}

/** The value of an unlabelled (or first matching) gauge, or null. */
export function gauge(samples, name) {
  let total = null;
  for (const s of samples) if (s.name === name) total = (total || 0) + s.value;
  return total;
}

/**
 * Histogram buckets by (tenant, extension): Map extKey → [{le, count}] sorted by `le`, the counts
 * cumulative as Prometheus writes them.
 */
export function buckets(samples, name) {
  const m = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = toNumber(s.labels.le);
    if (le === null) continue;
    const k = extKey(s.labels);
    if (!m.has(k)) m.set(k, new Map());
    const byLe = m.get(k);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  const out = new Map();
  for (const [k, byLe] of m) {
    out.set(
      k,
      [...byLe.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count })),
    );
  }
  return out;
}

/** `later - earlier` bucket by bucket (the observations between two samples). */
export function bucketDelta(later, earlier) {
  if (!earlier) return later;
  const before = new Map(earlier.map((b) => [b.le, b.count]));
  return later.map((b) => ({ le: b.le, count: Math.max(0, b.count - (before.get(b.le) || 0)) }));
}

/**
 * The q-quantile (0..1) of cumulative buckets, as Prometheus' `histogram_quantile`: linear
 * interpolation inside the bucket the rank falls in; in the +Inf bucket, the highest finite
 * bound. Null when there are no observations.
 */
export function quantile(q, bs) {
  if (!bs || bs.length === 0) return null;
  const sorted = [...bs].sort((a, b) => a.le - b.le);
  const total = sorted[sorted.length - 1].count;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      if (b.count === prevCount) return b.le;
      return prevLe + ((b.le - prevLe) * (rank - prevCount)) / (b.count - prevCount);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

/** A per-second rate between two counters taken `seconds` apart (a reset counts from zero). */
export function rate(later, earlier, seconds) {
  if (later === undefined || later === null || !(seconds > 0)) return 0;
  const before = earlier || 0;
  const d = later >= before ? later - before : later;
  return d / seconds;
}
