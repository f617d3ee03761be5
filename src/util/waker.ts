/**
 * A sleep that another part of a component can cut short: the sender loop of the publisher and
 * the connect loop of the IoT Hub connection wait on one. A wake with nobody asleep is kept, so the
 * next sleep returns at once and no wake-up is lost between two waits.
 */
export class Waker {
  private pending = false;
  private wakeSleeper: (() => void) | undefined;

  /** Resolves after `ms` (never, when omitted) or at the next wake(), whichever comes first. */
  sleep(ms?: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.wakeSleeper = undefined;
        resolve();
      };
      const timer = ms === undefined ? undefined : setTimeout(finish, ms);
      this.wakeSleeper = finish;
    });
  }

  wake(): void {
    if (this.wakeSleeper) this.wakeSleeper();
    else this.pending = true;
  }
}
