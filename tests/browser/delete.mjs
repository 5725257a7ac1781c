// Delete a tag from its repository page: a dismissed confirmation deletes nothing, an
// accepted one deletes the tag and says so.
import { check, env, run, shot, signIn, BASE } from './lib.mjs';

const REPO = env('REPO');
const TAG = env('DELETE_TAG');

await run(async ({ page }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await page.goto(`${BASE()}/ui/repositories/${REPO}`);
  const row = () => page.locator(`tr[data-tag="${TAG}"]`);
  check(await row().count() === 1, `tag ${TAG} listed`);

  // Without the CSRF token even a user with the right is refused.
  const bare = await page.request.post(`${BASE()}/ui/repositories/${REPO}/-/tags/${TAG}/delete`, { form: {}, maxRedirects: 0 });
  check(bare.status() === 403, `a delete without a CSRF token: ${bare.status()}`);

  page.once('dialog', (d) => d.dismiss());
  await row().locator('button:text("Delete")').click();
  await page.waitForTimeout(300);
  check(await row().count() === 1, 'a dismissed confirmation deletes nothing');

  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await Promise.all([page.waitForNavigation(), row().locator('button:text("Delete")').click()]);
  check(asked.includes(TAG) && asked.includes(REPO), `the confirmation names the tag and repository: ${asked}`);
  check(await row().count() === 0, 'the row is gone');
  check((await page.textContent('.notice')).includes(TAG), 'the page says the tag was deleted');
  await shot(page, 'deleted');
});
