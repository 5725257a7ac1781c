// The bundles list and one bundle: every images.yml entry present, nested bundles as a
// tree, the ImageLocations image and the imgpkg pull command.
import { BASE, check, env, run, shot, signIn } from './lib.mjs';

const REPO = env('REPO');
const TAG = env('TAG');

await run(async ({ page }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('header nav a:text("Bundles")')]);
  const row = page.locator(`tr[data-bundle="${REPO}:${TAG}"]`);
  check(await row.count() === 1, `the bundle ${REPO}:${TAG} is listed`);
  check((await row.locator('code').allTextContents()).includes(`imgpkg pull -b ${new URL(BASE()).host}/${REPO}:${TAG} -o ./bundle`), 'with its imgpkg pull command');
  await shot(page, 'bundles');

  await Promise.all([page.waitForNavigation(), row.locator(`a:text-is("${TAG}")`).click()]);
  const entries = page.locator('ul.tree li');
  const n = await entries.count();
  check(n >= 2, `${n} images.yml entries shown`);
  check(await page.locator('ul.tree li[data-present="false"]').count() === 0, 'none missing');
  check(await page.locator('ul.tree li[data-present="true"] > .present').count() === n, 'every entry marked present');
  check((await page.textContent('#bundle-counts')).endsWith(' 0 missing'), `counts: ${await page.textContent('#bundle-counts')}`);
  check(await page.locator('ul.tree ul.tree').count() >= 1, 'a nested bundle is shown as a subtree');
  check(await page.locator('dt:text("ImageLocations") + dd a').count() === 1, 'the ImageLocations image is linked');
  check((await page.locator('.pulls code').allTextContents()).some((c) => c.startsWith('imgpkg pull -b ')), 'the imgpkg pull command');
  await shot(page, 'bundle');
});
