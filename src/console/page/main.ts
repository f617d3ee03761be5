import './style.css';
import { setToken, token } from './api.js';
import { el, type View } from './dom.js';
import { HealthView } from './health.js';
import { LiveView } from './live.js';
import { ModelView } from './model.js';
import { ReviewView } from './review.js';

type Tab = 'live' | 'model' | 'health' | 'review';
const TABS: Record<Tab, string> = { live: 'Live', model: 'Model', health: 'Health', review: 'Review' };

const main = el('main');
const nav = el('nav');
const tokenForm = el('form', { className: 'token', attrs: { id: 'token-form' } });
tokenForm.hidden = true;
let current: View | undefined;

function tabOf(hash: string): Tab {
  const t = hash.replace(/^#/, '');
  return t in TABS ? (t as Tab) : 'live';
}

/** The daemon answered 401: ask for the API token (a wrong one is dropped first). */
function askToken(): void {
  current?.unmount();
  current = undefined;
  main.replaceChildren();
  const hadToken = token() !== null;
  setToken(null);
  const input = el('input', {
    attrs: { type: 'password', name: 'token', autocomplete: 'current-password', 'aria-label': 'API token' },
  });
  tokenForm.replaceChildren(
    el('label', {
      text: hadToken ? 'That token was refused. API token:' : 'This daemon requires its API token:',
    }),
    input,
    el('button', { text: 'Open', attrs: { type: 'submit' } }),
  );
  tokenForm.onsubmit = (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    tokenForm.hidden = true;
    show();
  };
  tokenForm.hidden = false;
  input.focus();
}

function show(): void {
  current?.unmount();
  main.replaceChildren();
  const tab = tabOf(location.hash);
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.tab === tab);
  const views: Record<Tab, () => View> = {
    live: () => new LiveView(askToken),
    model: () => new ModelView(askToken),
    health: () => new HealthView(askToken),
    review: () => new ReviewView(askToken),
  };
  current = views[tab]();
  current.mount(main);
}

for (const [tab, label] of Object.entries(TABS)) {
  nav.append(el('a', { text: label, attrs: { href: `#${tab}`, 'data-tab': tab } }));
}
document.body.append(el('header', {}, [el('h1', { text: 'edge-scorer' }), nav]), tokenForm, main);
window.addEventListener('hashchange', show);
show();
