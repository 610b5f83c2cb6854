// The server clock for the participant client: NTP samples from input acks, the mean offset of the lowest-RTT
// samples, slewed so server time never runs backwards. A port of netcode/thin_client/clock_sync.py; the
// algorithm is specified once for both clients in netcode/thin_client/CLIENT.md (section 3). Times in seconds.

/** {rtt, offset} of one exchange (t0 client send, t1 server receive, t2 server send, t3 client receive). */
export function ntpSample(t0, t1, t2, t3) {
  return { rtt: Math.max(0, (t3 - t0) - (t2 - t1)), offset: ((t1 - t0) + (t2 - t3)) / 2 };
}

/** Mean offset of the `best` lowest-RTT samples (ties by order, as Python's stable sort). */
export function targetOffset(samples, best) {
  if (!samples.length) throw new RangeError('targetOffset of no samples');
  const chosen = samples.map((s, i) => [s, i]).sort((a, b) => a[0].rtt - b[0].rtt || a[1] - b[1]).slice(0, Math.max(1, best));
  return chosen.reduce((sum, [s]) => sum + s.offset, 0) / chosen.length;
}

/** Move applied towards target over dt: proportional (slewTime), at most maxSlew s/s, no overshoot. */
export function slew(applied, target, dt, slewTime, maxSlew) {
  if (dt <= 0) return applied;
  const error = target - applied;
  const step = Math.max(-maxSlew, Math.min(maxSlew, error / slewTime)) * dt;
  return Math.abs(step) >= Math.abs(error) ? target : applied + step;
}

export const CLOCK_DEFAULTS = Object.freeze({ window: 32, best: 4, slewTime: 0.5, maxSlew: 0.05, stepThreshold: 0.25 });

export class ClockSync {
  constructor(config = {}) {
    this.config = { ...CLOCK_DEFAULTS, ...config };
    this.samples = [];
    this.applied = null;
    this.target = 0;
    this.lastLocal = null;
    this.steps = 0; // times the offset stepped (the first sample included)
  }

  get synchronised() {
    return this.applied !== null;
  }

  /** The lowest RTT in the window, or null. */
  get rtt() {
    return this.samples.length ? Math.min(...this.samples.map((s) => s.rtt)) : null;
  }

  _advance(localNow) {
    if (this.applied === null) return;
    const c = this.config;
    if (this.lastLocal !== null) this.applied = slew(this.applied, this.target, localNow - this.lastLocal, c.slewTime, c.maxSlew);
    if (this.lastLocal === null || localNow > this.lastLocal) this.lastLocal = localNow;
  }

  /** One exchange (t3 = local now); returns the sample, or null if rejected (non-finite, negative spans). */
  addExchange(t0, t1, t2, t3) {
    if (![t0, t1, t2, t3].every(Number.isFinite) || t3 < t0 || t2 < t1) return null;
    const sample = ntpSample(t0, t1, t2, t3);
    this._advance(t3);
    this.samples.push(sample);
    if (this.samples.length > this.config.window) this.samples.shift();
    this.target = targetOffset(this.samples, this.config.best);
    if (this.applied === null || this.target - this.applied > this.config.stepThreshold) {
      this.applied = this.target;
      this.lastLocal = t3;
      this.steps += 1;
    }
    return sample;
  }

  offset(localNow) {
    this._advance(localNow);
    return this.applied === null ? 0 : this.applied;
  }

  /** Estimated server clock at localNow; non-decreasing for non-decreasing localNow. */
  serverNow(localNow) {
    return localNow + this.offset(localNow);
  }
}
