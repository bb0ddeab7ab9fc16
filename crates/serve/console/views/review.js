// The permission review before an install, upgrade or rollback: the installed and the proposed
// bundle side by side, what is new (permissions and higher limits) highlighted, every requested
// permission an unchecked box (nothing is granted by default), and one explicit "Approve and
// install". A rollback also needs its own box ticked (it is sent as `force`).

import { admin } from '../api.js';
import { field, fill, h, uid } from '../dom.js';
import { LIMIT_NAMES, atomList, hash, limitValue, signers } from './show.js';

export const title = 'Review';

export async function render(root, ctx) {
  const tenant = ctx.params.get('tenant') || '';
  const extension = ctx.params.get('extension') || '';
  const contentHash = ctx.params.get('content_hash') || '';
  if (!tenant || !extension || !contentHash) return chooser(root, ctx, tenant);

  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, `Review ${extension} for ${tenant}`),
    h('p', { class: 'loading' }, 'Loading the review\u2026'),
  );
  const r = await admin.review(tenant, extension, contentHash);
  if (!ctx.current()) return null;
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, `Review: ${planWord(r.plan)} ${r.extension} for ${r.tenant}`),
    summary(r),
    sideBySide(r),
    changes(r),
    approval(ctx, r),
  );
  return null;
}

function planWord(plan) {
  return (
    {
      install: 'install',
      upgrade: 'upgrade',
      downgrade: 'roll back',
      reinstall: 'reinstall',
      refused: 'refused change to',
    }[plan] || String(plan)
  );
}

function summary(r) {
  const parts = [];
  if (r.from) parts.push(h('p', null, `From ${r.from.version} to ${r.to.version}.`));
  else parts.push(h('p', null, `A new install of ${r.to.version}.`));
  if (r.refusal) parts.push(h('p', { class: 'msg error', role: 'alert' }, `The service refuses this change: ${r.refusal}`));
  if (r.needs_approval) {
    parts.push(h('p', { class: 'msg warn' }, 'This change asks for more than was approved: it needs your explicit approval.'));
  }
  if (r.needs_force) {
    parts.push(h('p', { class: 'msg warn' }, 'This is a lower version than the installed one: a rollback, which needs its own confirmation below.'));
  }
  return h('div', { class: 'summary' }, parts);
}

function sideBySide(r) {
  const from = r.from;
  const to = r.to;
  const raised = new Map((r.limits_raised || []).map((l) => [l.limit, l]));
  const limitKeys = [
    ...new Set([...Object.keys(LIMIT_NAMES), ...Object.keys((from && from.limits) || {}), ...Object.keys(to.limits || {})]),
  ].filter((k) => (from && from.limits && k in from.limits) || (to.limits && k in to.limits));
  const row = (label, a, b, cls) =>
    h('tr', { class: cls || null }, h('th', { scope: 'row' }, label), h('td', null, a), h('td', null, b));
  const none = h('span', { class: 'none' }, 'not installed');
  return h(
    'table',
    { class: 'diff' },
    h('caption', null, 'Installed and proposed, side by side'),
    h(
      'thead',
      null,
      h('tr', null, h('th', { scope: 'col' }, 'Item'), h('th', { scope: 'col' }, 'Installed'), h('th', { scope: 'col' }, 'Proposed')),
    ),
    h(
      'tbody',
      null,
      row('Version', from ? from.version : none, to.version),
      row('Runs as', from ? from.kind : '', to.kind, from && from.kind !== to.kind ? 'raised' : null),
      row('Publisher', from ? from.publisher : '', to.publisher),
      row('Signer keys', from ? signers(from.signers) : '', signers(to.signers)),
      row('Content hash', from ? hash(from.content_hash) : '', hash(to.content_hash)),
      row('Grant', from ? h('code', null, from.grant ?? '') : '', h('span', { class: 'hint' }, 'chosen below')),
      row(
        'Requested permissions',
        from ? atomList(from.requested, r.removed, 'removed', 'removed') : '',
        atomList(to.requested, r.added, 'added', 'new'),
      ),
      limitKeys.map((k) => {
        const up = raised.get(k);
        return row(
          `Limit: ${LIMIT_NAMES[k] || k}`,
          from && from.limits ? limitValue(k, from.limits[k]) : '',
          up ? [h('span', { class: 'badge' }, 'raised'), ' ', limitValue(k, to.limits[k])] : limitValue(k, to.limits[k]),
          up ? 'raised' : null,
        );
      }),
    ),
  );
}

function changes(r) {
  const items = [];
  for (const a of r.added || []) items.push(h('li', { class: 'added' }, h('span', { class: 'badge' }, 'new'), ' ', a));
  for (const l of r.limits_raised || []) {
    items.push(
      h(
        'li',
        { class: 'raised' },
        h('span', { class: 'badge' }, 'raised'),
        ' ',
        `${LIMIT_NAMES[l.limit] || l.limit}: ${limitValue(l.limit, l.from)} \u2192 ${limitValue(l.limit, l.to)}`,
      ),
    );
  }
  for (const c of r.changes || []) items.push(h('li', { class: 'added' }, h('span', { class: 'badge' }, 'changed'), ' ', c));
  for (const a of r.removed || []) items.push(h('li', { class: 'removed' }, h('span', { class: 'badge' }, 'no longer asked'), ' ', a));
  return h(
    'section',
    { class: 'panel', 'aria-labelledby': 'changes-title' },
    h('h2', { id: 'changes-title' }, 'What changes'),
    items.length ? h('ul', { class: 'changes' }, items) : h('p', null, 'Nothing new is requested and no limit is raised.'),
  );
}

function approval(ctx, r) {
  const boxes = (r.grant_items || []).map((g) => {
    const box = h('input', { type: 'checkbox', name: 'grant', value: g.grant });
    const isNew = (r.added || []).includes(g.atom);
    return h(
      'div',
      { class: `check${isNew ? ' added' : ''}` },
      box,
      h(
        'label',
        { for: (box.id = uid('grant')) },
        isNew ? [h('span', { class: 'badge' }, 'new'), ' '] : null,
        g.atom,
        ' ',
        h('span', { class: 'hint' }, `(grant ${g.grant})`),
      ),
    );
  });
  const force = r.needs_force ? h('input', { type: 'checkbox', name: 'force' }) : null;
  const approve = h('button', { type: 'submit', disabled: Boolean(r.refusal) }, 'Approve and install');
  const form = h(
    'form',
    { class: 'approve' },
    h(
      'fieldset',
      null,
      h('legend', null, 'Grant'),
      h('p', null, 'Nothing is granted unless you tick it. Unticked permissions stay denied.'),
      boxes.length ? boxes : h('p', { class: 'none' }, 'The extension asks for no permission.'),
    ),
    force
      ? h(
          'fieldset',
          { class: 'force' },
          h('legend', null, 'Rollback'),
          h('div', { class: 'check' }, force, h('label', { for: (force.id = 'force-rollback') }, `Roll back to the lower version ${r.to.version}`)),
        )
      : null,
    h('div', { class: 'actions' }, approve, ' ', h('a', { href: `#/installs?tenant=${encodeURIComponent(r.tenant)}`, class: 'button secondary' }, 'Cancel')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (force && !force.checked) {
      ctx.notify('A rollback needs the \u201cRoll back\u201d box ticked.', 'error');
      force.focus();
      return;
    }
    const picked = [...new Set(boxes.map((b) => b.querySelector('input')).filter((b) => b.checked).map((b) => b.value))];
    const body = { content_hash: r.to.content_hash, grant: picked.length ? picked.join(',') : 'none' };
    if (force && force.checked) body.force = true;
    approve.disabled = true;
    try {
      const done = await admin.install(r.tenant, r.extension, body);
      ctx.notify(`${done.extension} ${done.version} installed for ${done.tenant} (${done.plan}); grant: ${done.grant}.`, 'ok');
      ctx.go(`#/installs?tenant=${encodeURIComponent(done.tenant)}`);
    } catch (e) {
      approve.disabled = false;
      ctx.notifyError(e, 'Installing');
    }
  });
  return h('section', { 'aria-labelledby': 'approve-title' }, h('h2', { id: 'approve-title' }, 'Approve'), form);
}

/** Without a change to review: pick a tenant and a published bundle. */
async function chooser(root, ctx, tenant) {
  fill(root, h('h1', { id: 'view-title', tabindex: '-1' }, 'Review a change'), h('p', { class: 'loading' }, 'Loading\u2026'));
  const [{ tenants }, { bundles }] = await Promise.all([admin.tenants(), admin.bundles()]);
  if (!ctx.current()) return null;
  const t = h(
    'select',
    { name: 'tenant' },
    tenants.map((x) => h('option', { value: x.name, selected: x.name === tenant }, x.name)),
  );
  const b = h(
    'select',
    { name: 'bundle' },
    bundles.map((x) => h('option', { value: `${x.id} ${x.content_hash}` }, `${x.id} ${x.version} (${x.content_hash.slice(0, 19)}\u2026)`)),
  );
  const form = h(
    'form',
    { class: 'inline' },
    field('Tenant', t),
    field('Published bundle', b),
    h('button', { type: 'submit', disabled: tenants.length === 0 || bundles.length === 0 }, 'Review'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const [extension, contentHash] = b.value.split(' ');
    ctx.go(`#/review?${new URLSearchParams({ tenant: t.value, extension, content_hash: contentHash })}`);
  });
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Review a change'),
    h('p', { class: 'lead' }, 'See what a published bundle asks for before it is installed for a tenant: nothing changes until you approve.'),
    form,
  );
  return null;
}
