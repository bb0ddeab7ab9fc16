// Installs: per tenant, what each installed extension is (version, publisher, signer keys,
// content hash), may do (effective permissions) and may use (limits); a new tenant, publishing a
// signed bundle, and the actions: install a published bundle, change version, uninstall. Every
// install and version change goes through the review view.

import { admin } from '../api.js';
import { dl, field, fill, h, when } from '../dom.js';
import { compareVersions, effectiveList, hash, limitPairs, signers } from './show.js';

export const title = 'Installs';

export async function render(root, ctx) {
  const tenantParam = ctx.params.get('tenant') || '';
  const status = h('p', { class: 'loading' }, 'Loading\u2026');
  fill(
    root,
    h('h1', { id: 'view-title', tabindex: '-1' }, 'Installs'),
    h('p', { class: 'lead' }, 'What each tenant runs, with what it may do. Installs and version changes go through a permission review.'),
    status,
  );
  const [{ tenants }, { bundles }] = await Promise.all([admin.tenants(), admin.bundles()]);
  if (!ctx.current()) return null;
  const names = tenants.map((t) => t.name);
  const tenant = names.includes(tenantParam) ? tenantParam : names[0] || '';
  const installs = tenant ? (await admin.installs(tenant)).installs : [];
  if (!ctx.current()) return null;
  status.remove();

  root.append(tenantSection(ctx, names, tenant));
  if (tenant) {
    root.append(installSection(ctx, tenant, bundles, installs));
    root.append(listSection(ctx, tenant, bundles, installs));
  }
  root.append(publishSection(ctx, tenant));
  return null;
}

function tenantSection(ctx, names, tenant) {
  const select = h(
    'select',
    { name: 'tenant' },
    names.length === 0 ? h('option', { value: '' }, 'no tenants yet') : null,
    names.map((n) => h('option', { value: n, selected: n === tenant }, n)),
  );
  const pick = h(
    'form',
    { class: 'inline' },
    field('Tenant', select),
    h('button', { type: 'submit', class: 'secondary', disabled: names.length === 0 }, 'Show installs'),
  );
  pick.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go(`#/installs?tenant=${encodeURIComponent(select.value)}`);
  });

  const name = h('input', { type: 'text', name: 'name', required: true, autocomplete: 'off', spellcheck: 'false' });
  const keyOut = h('div', { class: 'once', hidden: true });
  const create = h(
    'form',
    { class: 'inline' },
    field('New tenant name', name, 'Lowercase letters, digits and dashes.'),
    h('button', { type: 'submit', class: 'secondary' }, 'Create tenant'),
  );
  create.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await admin.createTenant(name.value.trim());
      fill(
        keyOut,
        h('p', null, `Tenant ${r.tenant} created. Its API key is shown this once; give it to the tenant now:`),
        h('code', { class: 'secret', 'data-testid': 'api-key' }, r.api_key),
        h('p', null, h('a', { href: `#/installs?tenant=${encodeURIComponent(r.tenant)}` }, `Show ${r.tenant}\u2019s installs`)),
      );
      keyOut.hidden = false;
      name.value = '';
      ctx.notify(`Tenant ${r.tenant} created.`, 'ok');
    } catch (e) {
      ctx.notifyError(e, 'Creating the tenant');
    }
  });
  return h(
    'section',
    { class: 'panel', 'aria-labelledby': 'tenants-title' },
    h('h2', { id: 'tenants-title' }, 'Tenant'),
    h('div', { class: 'row' }, pick, create),
    keyOut,
  );
}

function bundleLabel(b) {
  return `${b.id} ${b.version} (${b.publisher}, ${b.content_hash.slice(0, 19)}\u2026)`;
}

function reviewHash(tenant, extension, contentHash) {
  const q = new URLSearchParams({ tenant, extension, content_hash: contentHash });
  return `#/review?${q}`;
}

function installSection(ctx, tenant, bundles, installs) {
  const installed = new Set(installs.map((i) => i.extension));
  const candidates = bundles.filter((b) => !installed.has(b.id));
  const select = h(
    'select',
    { name: 'bundle' },
    candidates.length === 0 ? h('option', { value: '' }, 'no published bundle to install') : null,
    candidates.map((b) => h('option', { value: `${b.id} ${b.content_hash}` }, bundleLabel(b))),
  );
  const form = h(
    'form',
    { class: 'inline' },
    field('Published bundle', select),
    h('button', { type: 'submit', disabled: candidates.length === 0 }, 'Review install'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const [id, contentHash] = select.value.split(' ');
    if (id && contentHash) ctx.go(reviewHash(tenant, id, contentHash));
  });
  return h(
    'section',
    { class: 'panel', 'aria-labelledby': 'install-title' },
    h('h2', { id: 'install-title' }, `Install an extension for ${tenant}`),
    h('p', null, 'Pick a published bundle; the review that follows shows what it asks for, and nothing is granted unless you tick it.'),
    form,
  );
}

function listSection(ctx, tenant, bundles, installs) {
  return h(
    'section',
    { 'aria-labelledby': 'installed-title' },
    h('h2', { id: 'installed-title' }, `Installed for ${tenant}`),
    installs.length === 0
      ? h('p', { class: 'none' }, 'Nothing is installed for this tenant.')
      : h('div', { class: 'cards' }, installs.map((i) => installCard(ctx, i, bundles))),
  );
}

function installCard(ctx, i, bundles) {
  const cardId = `install-${i.extension.replace(/[^a-zA-Z0-9-]/g, '-')}`;
  const others = bundles
    .filter((b) => b.id === i.extension && b.content_hash !== i.content_hash)
    .sort((a, b) => compareVersions(b.version, a.version));
  const actions = h('div', { class: 'actions' });
  if (others.length > 0) {
    const select = h(
      'select',
      { name: 'version' },
      others.map((b) => {
        const c = compareVersions(b.version, i.version);
        const what = c > 0 ? 'upgrade' : c < 0 ? 'roll back' : 'same version, other build';
        return h('option', { value: b.content_hash }, `${b.version} (${what})`);
      }),
    );
    const form = h(
      'form',
      { class: 'inline' },
      field(`Change ${i.extension} to version`, select),
      h('button', { type: 'submit', class: 'secondary' }, 'Review change'),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      ctx.go(reviewHash(i.tenant, i.extension, select.value));
    });
    actions.append(form);
  } else {
    actions.append(h('p', { class: 'hint' }, 'No other published version of this extension.'));
  }
  const confirmBox = h('div', { class: 'confirm', role: 'group', 'aria-label': `Confirm uninstall of ${i.extension}`, hidden: true });
  const uninstall = h('button', { type: 'button', class: 'danger' }, `Uninstall ${i.extension}`);
  uninstall.addEventListener('click', () => {
    const yes = h('button', { type: 'button', class: 'danger' }, 'Yes, uninstall');
    const no = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    fill(
      confirmBox,
      h('p', null, `Uninstall ${i.extension} ${i.version} for ${i.tenant}? The tenant\u2019s calls to it stop at once.`),
      yes,
      ' ',
      no,
    );
    confirmBox.hidden = false;
    uninstall.hidden = true;
    no.addEventListener('click', () => {
      confirmBox.hidden = true;
      uninstall.hidden = false;
      uninstall.focus();
    });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await admin.uninstall(i.tenant, i.extension);
        ctx.notify(`Uninstalled ${i.extension} for ${i.tenant}.`, 'ok');
        ctx.go(`#/installs?tenant=${encodeURIComponent(i.tenant)}`);
      } catch (e) {
        yes.disabled = false;
        ctx.notifyError(e, 'Uninstalling');
      }
    });
    yes.focus();
  });
  actions.append(uninstall, confirmBox);

  return h(
    'article',
    { class: 'card', id: cardId, 'aria-labelledby': `${cardId}-title`, 'data-extension': i.extension },
    h('h3', { id: `${cardId}-title` }, i.extension, ' ', h('span', { class: 'version' }, i.version)),
    dl([
      ['Version', i.version],
      ['Publisher', i.publisher ?? 'unknown'],
      ['Signer keys', signers(i.signers)],
      ['Content hash', hash(i.content_hash)],
      ['Grant', h('code', null, i.grant)],
      ['Installed', when(i.installed)],
    ]),
    h('h4', null, 'Effective permissions'),
    h('p', { class: 'hint' }, 'Requested \u2229 granted \u2229 policy: what it can actually use.'),
    i.effective_error ? h('p', { class: 'msg error' }, `Cannot be worked out: ${i.effective_error}`) : null,
    effectiveList(i.effective),
    h('h4', null, 'Requested'),
    i.requested && i.requested.length
      ? h('ul', { class: 'atoms' }, i.requested.map((a) => h('li', null, a)))
      : h('p', { class: 'none' }, 'nothing'),
    h('h4', null, 'Limits'),
    dl(limitPairs(i.limits), 'facts limits'),
    actions,
  );
}

function publishSection(ctx, tenant) {
  const bundle = h('input', { type: 'file', name: 'bundle', accept: '.wext', required: true });
  const signature = h('input', { type: 'file', name: 'signature', accept: '.sig', required: true });
  const form = h(
    'form',
    { class: 'stack' },
    field('Bundle (.wext)', bundle),
    field('Signature (.wext.sig)', signature),
    h('button', { type: 'submit', class: 'secondary' }, 'Publish'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const data = new FormData();
    data.append('bundle', bundle.files[0]);
    data.append('signature', signature.files[0]);
    try {
      const r = await admin.publish(data);
      ctx.notify(`Published ${r.id} ${r.version} by ${r.publisher} (${r.content_hash}).`, 'ok');
      ctx.go(`#/installs?tenant=${encodeURIComponent(tenant)}`);
    } catch (e) {
      ctx.notifyError(e, 'Publishing');
    }
  });
  return h(
    'section',
    { class: 'panel', 'aria-labelledby': 'publish-title' },
    h('h2', { id: 'publish-title' }, 'Publish a signed bundle'),
    h('p', null, 'The signature is checked against the trust bundle before anything is stored.'),
    form,
  );
}
