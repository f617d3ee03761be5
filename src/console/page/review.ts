import { el, type View } from './dom.js';

/**
 * The review view's place. Reviewing needs the captures API (`GET /v1/captures`,
 * `PUT /v1/captures/{id}/label`), which this daemon does not serve yet: the view says so, and
 * lists nothing rather than anything made up (README, "Operator console").
 */
export class ReviewView implements View {
  mount(root: HTMLElement): void {
    root.append(
      el('section', {}, [
        el('h2', { text: 'Review' }),
        el('p', {
          attrs: { id: 'review-unavailable' },
          text: 'Frame capture is not part of this daemon yet, so there are no captured frames to review.',
        }),
        el('p', {
          className: 'muted',
          text:
            'Once capture is available, this view lists the captured frames waiting for a verdict and takes one key per frame: ' +
            'o for ok, d then a label for a defect, b to correct a box; each verdict is written through the captures API.',
        }),
      ]),
    );
  }

  unmount(): void {}
}
