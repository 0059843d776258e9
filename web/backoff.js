// The clients' retry rule (docs/protocol.md, "Reconnecting"), the same as the Rust clients'
// `townhall_shield::Backoff`: full-jitter exponential backoff with the server's Retry-After (or
// a `bye`'s `reconnect_after_ms`) as a floor. Attempt n after a failure waits
//   retryAfter + random(0, min(cap, base * 2^n))
// so a crowd that failed at the same moment comes back as a steady trickle, not in waves.

/** One client's backoff: how many attempts in a row have failed. */
export class Backoff {
  /** Windows from `baseMs`, doubling, up to `capMs` (the page's listeners: 0.5 s to 30 s). */
  constructor(baseMs = 500, capMs = 30000) {
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.failures = 0;
  }

  /** The window the next wait is drawn from, ms. */
  window() {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.failures, 20));
  }

  /**
   * The wait before the next attempt, ms: `retryAfterMs` (if the server gave one) plus a
   * uniform draw over the window; counts the failure. `random` is injectable for tests.
   */
  next(retryAfterMs = 0, random = Math.random) {
    const floor = Number.isFinite(retryAfterMs) && retryAfterMs > 0 ? retryAfterMs : 0;
    const delay = floor + this.window() * random();
    this.failures += 1;
    return delay;
  }

  /** A success: the next failure starts from the first window again. */
  reset() {
    this.failures = 0;
  }
}

/** The delay a `Retry-After` header asks for (seconds or an HTTP date), or undefined. */
export function retryAfterMs(header) {
  if (!header) return undefined;
  const secs = Number(header);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
