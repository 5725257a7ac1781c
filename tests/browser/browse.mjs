// Sign in, list repositories, filter them, open a repository, a multi-platform index and
// one of its images; switch the theme; check each page's weight (HTML + script + style).
import { BASE, check, env, run, shot, signIn, weight } from './lib.mjs';

const REPO = env('REPO'); // holds tags `IMAGE_TAG` (an image) and `INDEX_TAG` (an index)
const OTHER = env('OTHER_REPO'); // another repository, hidden by the filter
await run(async ({ page }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  const names = await page.$$eval('#results tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  check(names.includes(REPO) && names.includes(OTHER), `both repositories listed: ${names.join(', ')}`);
  await weight(page);
  await shot(page, 'repositories');

  // Filtering as one types (htmx swaps the table in place and updates the URL).
  await page.keyboard.press('/');
  check(await page.evaluate(() => document.activeElement?.getAttribute('name') === 'q'), '"/" focuses the filter');
  await page.keyboard.type(REPO.split('/').pop());
  await page.waitForFunction((other) => ![...document.querySelectorAll('#results tbody a')].some((a) => a.textContent === other), OTHER);
  const filtered = await page.$$eval('#results tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  check(filtered.includes(REPO) && !filtered.includes(OTHER), `filter keeps ${REPO} only: ${filtered.join(', ')}`);
  check(page.url().includes('q='), `the filter is in the URL (${page.url()})`);

  await Promise.all([page.waitForNavigation(), page.click(`#results a:text-is("${REPO}")`)]);
  check(new URL(page.url()).pathname === `/ui/repositories/${REPO}`, 'on the repository page');
  const imageRow = page.locator(`tr[data-tag="${env('IMAGE_TAG')}"]`);
  const indexRow = page.locator(`tr[data-tag="${env('INDEX_TAG')}"]`);
  check(await imageRow.count() === 1 && await indexRow.count() === 1, 'one row per tag');
  check((await imageRow.textContent()).includes('OCI image'), 'the image row says what it is');
  const plats = await indexRow.locator('.platform').allTextContents();
  check(plats.includes('linux/amd64') && plats.includes('linux/arm64/v8'), `the index row lists its platforms: ${plats.join(', ')}`);
  check(/\d+(\.\d+)? (B|KiB|MiB)/.test(await indexRow.locator('td.num').textContent()), 'sizes in human units');
  check(await page.locator('button.danger:text("Delete")').count() > 0, 'a user with the delete right sees Delete buttons');
  await indexRow.locator('summary').click();
  const cmds = await indexRow.locator('.pulls code').allTextContents();
  const host = new URL(BASE()).host;
  check(cmds.includes(`docker pull ${host}/${REPO}:${env('INDEX_TAG')}`), `docker pull command: ${cmds[0]}`);
  check(cmds.some((c) => c.startsWith('crictl pull ')), 'crictl pull command');
  await weight(page);
  await shot(page, 'repository');

  // The index: its children with platforms.
  await Promise.all([page.waitForNavigation(), indexRow.locator('td.tag a').click()]);
  check((await page.textContent('h2:text("Platforms") + table')).includes('linux/arm64/v8'), 'the index page lists the platforms');
  const children = page.locator('h2:text("Platforms") + table tbody tr');
  check(await children.count() === 2, 'two children');
  check((await page.textContent('pre.json')).includes('\n  "manifests": ['), 'the manifest JSON is pretty-printed');
  await weight(page);
  await shot(page, 'index');

  // One child: config and layers.
  await Promise.all([page.waitForNavigation(), children.first().locator('a').click()]);
  check(await page.locator('h2:text("Layers") + table tbody tr').count() >= 1, 'the image page lists its layers');
  check(await page.locator('h2:text("Config")').count() === 1, 'and its config');
  check((await page.textContent('dl.facts')).includes('none (untagged)'), 'an untagged child says so');
  await shot(page, 'manifest');

  // Theme toggle, kept across a reload.
  const before = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.click('#theme');
  const after = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(before !== after, `the theme toggle changes the colours (${before} → ${after})`);
  await page.reload();
  check(await page.evaluate(() => getComputedStyle(document.body).backgroundColor) === after, 'the chosen theme survives a reload');
  await shot(page, 'manifest-other-theme');

  // Sign out: back to the sign-in page for anything.
  await Promise.all([page.waitForNavigation(), page.click('header button:text("Sign out")')]);
  await page.goto(`${BASE()}/ui/repositories/${REPO}`);
  check(page.url().includes('/ui/login'), 'signed out: the repository page asks for a sign-in');
});
