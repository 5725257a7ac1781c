// The storage page: the totals and a repository's bytes as the admin API counts them; a GC
// dry run says what would be freed and what the grace window holds back, and changes
// nothing; a run (after its confirmation) frees exactly that.
import { BASE, check, env, run, shot, signIn, weight } from './lib.mjs';

const TOTAL = env('EXPECT_TOTAL_BYTES');
const REPO = env('REPO');
const REPO_BYTES = env('EXPECT_REPO_BYTES');
const REPO_UNIQUE = env('EXPECT_REPO_UNIQUE');
const FREED = env('EXPECT_FREED_BYTES');
const HELD = env('EXPECT_HELD_BLOBS');

await run(async ({ page }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('header nav a:text("Storage")')]);
  check(new URL(page.url()).pathname === '/ui/storage', 'the Storage link leads to the page');
  const total = await page.textContent('dd.total-bytes');
  check(total.includes(`(${TOTAL} bytes)`), `the total is the API's ${TOTAL} bytes: ${total}`);
  const row = page.locator(`tr[data-repo="${REPO}"]`);
  check(await row.locator('td.bytes').getAttribute('data-bytes') === REPO_BYTES, `${REPO} uses ${REPO_BYTES} bytes`);
  check(await row.locator('td.unique').getAttribute('data-bytes') === REPO_UNIQUE, `${REPO} has ${REPO_UNIQUE} unique bytes`);
  check(/(KiB|MiB)/.test(await row.innerText()), 'sizes in human units');
  // Sorted by size, the largest repository comes first.
  await Promise.all([page.waitForNavigation(), page.click('a:text-is("size")')]);
  const sizes = await page.$$eval('table.usage td.bytes', (tds) => tds.map((t) => Number(t.dataset.bytes)));
  check(sizes.length > 1 && sizes.every((s, i) => i === 0 || sizes[i - 1] >= s), `sorted by size: ${sizes.join(', ')}`);
  await weight(page);
  await shot(page, 'storage');

  await Promise.all([page.waitForNavigation(), page.click('#gc-dry-run')]);
  let report = page.locator('.gc-report');
  check(await report.getAttribute('data-dry-run') === 'true', 'a dry run');
  let freed = await report.locator('dd.freed').textContent();
  check(freed.includes(`(${FREED} bytes)`), `the dry run would free ${FREED} bytes: ${freed}`);
  const held = await report.locator('dd.held-back').textContent();
  check(held.startsWith(`${HELD} blob`) && held.includes('collectable from'), `the grace window holds back ${HELD} blobs: ${held}`);
  check((await page.textContent('dd.total-bytes')).includes(`(${TOTAL} bytes)`), 'the dry run changed nothing');
  await shot(page, 'storage-gc-dry-run');

  page.once('dialog', (d) => d.dismiss());
  await page.click('#gc-run');
  await page.waitForTimeout(300);
  check(await page.locator('.gc-report').getAttribute('data-dry-run') === 'true', 'a dismissed confirmation runs nothing');

  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await Promise.all([page.waitForNavigation(), page.click('#gc-run')]);
  check(asked.includes('garbage collection'), `the run asks first: ${asked}`);
  report = page.locator('.gc-report');
  check(await report.getAttribute('data-dry-run') === 'false', 'a real run');
  freed = await report.locator('dd.freed').textContent();
  check(freed.includes(`(${FREED} bytes)`), `the run freed ${FREED} bytes: ${freed}`);
  const after = await page.textContent('dd.total-bytes');
  check(!after.includes(`(${TOTAL} bytes)`), `the total went down: ${after}`);
  await shot(page, 'storage-gc-run');

  await Promise.all([page.waitForNavigation(), page.click('#gc-dry-run')]);
  freed = await page.locator('.gc-report dd.freed').textContent();
  check(freed.includes('(0 bytes)'), `nothing left to free: ${freed}`);
});
