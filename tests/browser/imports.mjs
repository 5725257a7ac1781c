// The import history: an import is listed with its time, importer, tar name and size; its
// report lists every manifest it brought; "remove" previews what would go, a dismissed
// confirmation removes nothing, an accepted one removes it and the history says so.
import { BASE, check, env, run, shot, signIn, weight } from './lib.mjs';

const ID = env('IMPORT_ID');
const NAME = env('IMPORT_NAME');
const REPO = env('IMPORT_REPO');
const TAG = env('IMPORT_TAG'); // a tag the import set, which the removal takes away
const MANIFESTS = Number(env('IMPORT_MANIFESTS'));
const OTHER_ID = env('OTHER_IMPORT_ID'); // another import, which stays

await run(async ({ page }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('header nav a:text("Imports")')]);
  check(new URL(page.url()).pathname === '/ui/imports', 'the Imports link leads to the history');
  const row = () => page.locator(`tr[data-import="${ID}"]`);
  check(await row().count() === 1, `import ${ID} listed`);
  const text = await row().innerText();
  check(text.includes(NAME), `the row names the tar: ${text}`);
  check(text.includes(REPO), `the row names the repository: ${text}`);
  check(text.includes(env('AIRDOCK_USER')), `the row names who imported: ${text}`);
  check(/\d+(\.\d+)? (B|KiB|MiB)/.test(text), `the row gives the tar's size: ${text}`);
  check(/ago|just now/.test(text) && /\d{4}-\d\d-\d\d \d\d:\d\d/.test(text), `the time is relative and absolute: ${text}`);
  check(text.includes(TAG), `the row shows the tags it brought: ${text}`);
  check(await page.locator(`tr[data-import="${OTHER_ID}"]`).count() === 1, 'the other import is listed');
  const order = await page.$$eval('tr[data-import]', (rs) => rs.map((r) => r.dataset.import));
  check(order.indexOf(ID) < order.indexOf(OTHER_ID), `newest first: ${order.join(', ')}`);
  await weight(page);
  await shot(page, 'imports');

  await Promise.all([page.waitForNavigation(), row().locator('td.wrap a').first().click()]);
  check(new URL(page.url()).pathname === `/ui/imports/${ID}`, 'on the import report');
  const rows = await page.locator('table.report tbody tr').count();
  check(rows === MANIFESTS, `the report lists its ${MANIFESTS} manifests (${rows})`);
  check(await page.locator('table.report .present').count() === MANIFESTS, 'every manifest is stored');
  check((await page.textContent('dl.facts')).includes(NAME), 'the report names the tar');
  check(await page.locator(`table.report .badge:text-is("${TAG}")`).count() === 1, `the report shows tag ${TAG} beside its manifest`);
  await weight(page);
  await shot(page, 'import-report');

  await Promise.all([page.waitForNavigation(), page.click('a:text("Remove this import")')]);
  check(new URL(page.url()).pathname === `/ui/imports/${ID}/remove`, 'on the removal preview');
  const preview = await page.textContent('section.preview');
  check(preview.includes('Would be removed') && preview.includes(TAG), `the preview lists tag ${TAG}`);
  await weight(page);
  await shot(page, 'import-remove-preview');

  page.once('dialog', (d) => d.dismiss());
  await page.click('button:text("Remove this import")');
  await page.waitForTimeout(300);
  check(new URL(page.url()).pathname === `/ui/imports/${ID}/remove`, 'a dismissed confirmation removes nothing');
  const still = await page.request.get(`${BASE()}/ui/imports/${ID}`);
  check(still.status() === 200, 'the import is still there');

  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await Promise.all([page.waitForNavigation(), page.click('button:text("Remove this import")')]);
  check(asked.includes(REPO), `the confirmation names the repository: ${asked}`);
  check(new URL(page.url()).pathname === '/ui/imports', 'back on the history');
  check((await page.textContent('.notice')).includes(ID), 'the history says the import was removed');
  check(await row().count() === 0, 'the import is gone from the history');
  check(await page.locator(`tr[data-import="${OTHER_ID}"]`).count() === 1, 'the other import stays');
  await shot(page, 'import-removed');
  const gone = await page.request.get(`${BASE()}/ui/imports/${ID}`);
  check(gone.status() === 404, `its report is gone: ${gone.status()}`);
  const tags = await page.request.get(`${BASE()}/ui/repositories/${REPO}?q=${encodeURIComponent(TAG)}`);
  check(!(await tags.text()).includes(`data-tag="${TAG}"`), `tag ${TAG} is gone from ${REPO}`);
});
