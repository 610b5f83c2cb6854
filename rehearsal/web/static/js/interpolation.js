// Interpolation buffers for remote objects and the jitter-adaptive delay that feeds them: a port of
// netcode/thin_client/interpolation.py, specified once for both clients in netcode/thin_client/CLIENT.md
// (section 4). render_time = server_now - (latency + delay), delay = clamp(2 jitter + interval, 10, 50 ms).
// No clock is read here: every time is an argument (seconds).

export const INSERTED = 'inserted';
export const DUPLICATE = 'duplicate';
export const LATE = 'late';

function bisectRight(a, x) {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (x < a[mid]) hi = mid; else lo = mid + 1;
  }
  return lo;
}

function bisectLeft(a, x) {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** One object's samples by server time; `interpolate(a, b, u)` blends two states (u > 1 extrapolates). */
export class InterpolationBuffer {
  constructor(interpolate, { capacity = 32, maxExtrapolation = 0.05 } = {}) {
    this.interpolate = interpolate;
    this.capacity = capacity;
    this.maxExtrapolation = maxExtrapolation;
    this.times = [];
    this.states = [];
    this.lastRenderTime = -Infinity;
    this.counts = { inserted: 0, duplicate: 0, late: 0, evicted: 0 };
  }

  get length() {
    return this.times.length;
  }

  newest() {
    const n = this.times.length;
    return n ? [this.times[n - 1], this.states[n - 1]] : null;
  }

  insert(time, state) {
    if (time <= this.lastRenderTime) {
      this.counts.late += 1;
      return LATE;
    }
    const i = bisectLeft(this.times, time);
    if (i < this.times.length && this.times[i] === time) {
      this.counts.duplicate += 1;
      return DUPLICATE;
    }
    this.times.splice(i, 0, time);
    this.states.splice(i, 0, state);
    this.counts.inserted += 1;
    while (this.times.length > this.capacity) {
      this.times.shift();
      this.states.shift();
      this.counts.evicted += 1;
    }
    return INSERTED;
  }

  /** [state, mode] at renderTime (clamped non-decreasing), mode 'interpolated' | 'extrapolated' | 'held' | 'early'. */
  sample(renderTime) {
    const times = this.times;
    const states = this.states;
    if (!times.length) return null;
    const t = Math.max(renderTime, this.lastRenderTime);
    this.lastRenderTime = t;
    let i = bisectRight(times, t);
    if (i === 0) return [states[0], 'early'];
    if (i < times.length) {
      if (i > 1) {
        times.splice(0, i - 1);
        states.splice(0, i - 1);
        i = 1;
      }
      const t0 = times[i - 1];
      const t1 = times[i];
      return [this.interpolate(states[i - 1], states[i], (t - t0) / (t1 - t0)), 'interpolated'];
    }
    if (times.length > 2) {
      times.splice(0, times.length - 2);
      states.splice(0, states.length - 2);
    }
    if (t === times[times.length - 1]) return [states[states.length - 1], 'interpolated'];
    if (times.length === 1) return [states[0], 'held'];
    const [t0, t1] = times;
    const ahead = Math.min(t - t1, this.maxExtrapolation);
    const mode = t - t1 <= this.maxExtrapolation ? 'extrapolated' : 'held';
    return [this.interpolate(states[0], states[1], 1 + ahead / (t1 - t0)), mode];
  }

  clear() {
    this.times.length = 0;
    this.states.length = 0;
  }
}

/** [mean, mean absolute deviation] of transits ([0, 0] for none). */
export function transitStats(transits) {
  if (!transits.length) return [0, 0];
  const mean = transits.reduce((a, b) => a + b, 0) / transits.length;
  return [mean, transits.reduce((a, b) => a + Math.abs(b - mean), 0) / transits.length];
}

/** Median spacing of the distinct snapshot times (arrival order does not matter). */
export function medianInterval(serverTimes, fallback) {
  const distinct = [...new Set(serverTimes)].sort((a, b) => a - b);
  if (distinct.length < 2) return fallback;
  const diffs = [];
  for (let i = 1; i < distinct.length; i++) diffs.push(distinct[i] - distinct[i - 1]);
  diffs.sort((a, b) => a - b);
  const m = diffs.length >> 1;
  return diffs.length % 2 ? diffs[m] : (diffs[m - 1] + diffs[m]) / 2;
}

export const DELAY_DEFAULTS = Object.freeze({
  window: 64, k: 2, minDelay: 0.01, maxDelay: 0.05, defaultInterval: 1 / 60, delaySlew: 0.1,
});

/** Snapshot transit, jitter and interval measured; the applied lag latency + delay slewed at <= delaySlew s/s. */
export class AdaptiveDelay {
  constructor(config = {}) {
    this.config = { ...DELAY_DEFAULTS, ...config };
    this.transits = [];
    this.times = [];
    this.target = this.config.maxDelay;
    this.latency = 0;
    this.applied = null;
    this.lastLocal = null;
  }

  onSnapshot(snapshotTime, serverNowAtArrival) {
    const c = this.config;
    this.transits.push(serverNowAtArrival - snapshotTime);
    this.times.push(snapshotTime);
    if (this.transits.length > c.window) {
      this.transits.shift();
      this.times.shift();
    }
    const [mean, jitter] = transitStats(this.transits);
    const interval = medianInterval(this.times, c.defaultInterval);
    this.latency = Math.max(0, mean);
    this.target = Math.min(c.maxDelay, Math.max(c.minDelay, c.k * jitter + interval));
    if (this.applied === null) this.applied = this.latency + this.target;
  }

  get jitter() {
    return transitStats(this.transits)[1];
  }

  lag(localNow) {
    if (this.applied === null) return this.config.maxDelay;
    if (this.lastLocal !== null && localNow > this.lastLocal) {
      const step = this.config.delaySlew * (localNow - this.lastLocal);
      this.applied += Math.max(-step, Math.min(step, this.latency + this.target - this.applied));
    }
    if (this.lastLocal === null || localNow > this.lastLocal) this.lastLocal = localNow;
    return this.applied;
  }

  delay(localNow) {
    return this.lag(localNow) - this.latency;
  }
}
