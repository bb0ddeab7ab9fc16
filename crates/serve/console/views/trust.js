// Trust: the publishers of the trust bundle the service verifies against, their keys (id and
// public key), revoked keys and thresholds, and a reload from the trust file.

import { admin } from '../api.js';
import { dl, fill, h, visible } from '../dom.js';

export const title = 'Trust';

/** A PEM block as text: each line made visible on its own, the line breaks kept. */
function pem(text) {
  return h('pre', { class: 'pem' }, String(text || '').split('\n').map(visible).join('\n'));
}

export async function render(root, ctx) {
  const reload = h('button', { type: 'button' }, 'Reload trust bundle');
  const list = h('div', { class: 'publishers' }, h('p', { class: 'loading' }, 'Loading\u2026'));
  const source = h('p');
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Trust'),
    h('p', { class: 'lead' }, 'Bundles are installed only when signed by enough of a trusted publisher\u2019s keys that are not revoked.'),
    h('div', { class: 'row' }, source, reload),
    list,
  );

  const load = async () => {
    const t = await admin.trust();
    if (!ctx.current()) return;
    source.textContent = t.source ? `Trust file: ${visible(t.source)}` : 'No trust file: the service trusts no publisher.';
    const pubs = t.publishers || [];
    fill(
      list,
      pubs.length === 0
        ? h('p', { class: 'none' }, 'No publisher is trusted.')
        : pubs.map((p, n) =>
            h(
              'section',
              { class: 'panel', 'aria-labelledby': `pub-${n}`, 'data-publisher': p.name },
              h('h2', { id: `pub-${n}` }, p.name),
              dl([
                ['Threshold', `${p.threshold} signature${p.threshold === 1 ? '' : 's'} needed`],
                ['Keys', String((p.keys || []).length)],
                ['Revoked', (p.revoked || []).length ? (p.revoked || []).map((r) => r.id).join(', ') : 'none'],
              ]),
              h('h3', null, 'Keys'),
              (p.keys || []).length
                ? h(
                    'ul',
                    { class: 'keys' },
                    p.keys.map((k) =>
                      h('li', null, h('code', { class: 'key-id' }, k.id), h('details', null, h('summary', null, `Public key ${k.id}`), pem(k.public_key_pem))),
                    ),
                  )
                : h('p', { class: 'none' }, 'no keys'),
              (p.revoked || []).length
                ? [h('h3', null, 'Revoked keys'), h('ul', { class: 'keys revoked' }, p.revoked.map((r) => h('li', null, h('code', null, r.id))))]
                : null,
            ),
          ),
    );
  };

  reload.addEventListener('click', async () => {
    reload.disabled = true;
    try {
      await admin.reloadTrust();
      ctx.notify('Trust bundle reloaded.', 'ok');
      await load();
    } catch (e) {
      ctx.notifyError(e, 'Reloading the trust bundle');
    } finally {
      reload.disabled = false;
    }
  });
  await load();
  return null;
}
