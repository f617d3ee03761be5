/** A tiny element builder: the page is plain DOM, without a framework (README, "Operator console"). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; attrs?: Record<string, string> } = {},
  children: (Node | string)[] = [],
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [k, v] of Object.entries(props.attrs ?? {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

/** A view: mounted into the main area while its tab is shown, unmounted (its work stopped) after. */
export interface View {
  mount(root: HTMLElement): void;
  unmount(): void;
}

export function fmtTime(iso: string | undefined | null): string {
  return iso ? new Date(iso).toLocaleString() : '—';
}
