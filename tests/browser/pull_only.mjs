// A user who may only pull sees no delete button, and the server refuses a forged delete
// (403), as it refuses one without or with a wrong CSRF token. Nor does such a user see
// Imports or Storage, or get to remove an import or run GC by a forged request.
import { check, env, run, signIn, BASE } from './lib.mjs';

const REPO = env('REPO');
const TAG = env('DELETE_TAG');
const IMPORT_ID = env('IMPORT_ID');

await run(async ({ page, context }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await page.goto(`${BASE()}/ui/repositories/${REPO}`);
  check(await page.locator(`tr[data-tag="${TAG}"]`).count() === 1, `tag ${TAG} listed`);
  check(await page.locator('button:text("Delete")').count() === 0, 'no Delete button for a pull-only user');

  // The session's own CSRF token (from the sign-out form): the right is still missing.
  const csrf = await page.getAttribute('input[name="_csrf"]', 'value');
  const url = `${BASE()}/ui/repositories/${REPO}/-/tags/${TAG}/delete`;
  let r = await page.request.post(url, { form: { _csrf: csrf }, maxRedirects: 0 });
  check(r.status() === 403, `forged delete with a valid CSRF token: ${r.status()}`);
  check((await r.text()).includes('delete right'), 'the refusal says which right is missing');
  r = await page.request.post(url, { form: {}, maxRedirects: 0 });
  check(r.status() === 403, `forged delete without a CSRF token: ${r.status()}`);
  r = await page.request.post(url, { form: { _csrf: csrf.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) }, maxRedirects: 0 });
  check(r.status() === 403, `forged delete with a wrong CSRF token: ${r.status()}`);
  // No upload for a user who is not an admin: no link, and the server refuses.
  check(await page.locator('header nav a:text("Upload")').count() === 0, 'no Upload link for a non-admin');
  r = await page.request.get(`${BASE()}/ui/upload`, { maxRedirects: 0 });
  check(r.status() === 403, `the upload page refuses a non-admin: ${r.status()}`);
  r = await page.request.post(`${BASE()}/ui/upload?repository=team/x`, {
    headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/octet-stream' }, data: Buffer.alloc(1024), maxRedirects: 0,
  });
  check(r.status() === 403, `a forged upload by a non-admin: ${r.status()}`);

  // Imports and storage are admin work: no links, no pages, and forged actions are refused
  // even with the session's valid CSRF token.
  for (const name of ['Imports', 'Storage']) {
    check(await page.locator(`header nav a:text("${name}")`).count() === 0, `no ${name} link for a non-admin`);
  }
  for (const path of ['/ui/imports', `/ui/imports/${IMPORT_ID}`, `/ui/imports/${IMPORT_ID}/remove`, '/ui/storage']) {
    r = await page.request.get(`${BASE()}${path}`, { maxRedirects: 0 });
    check(r.status() === 403, `GET ${path} refused for a non-admin: ${r.status()}`);
  }
  r = await page.request.post(`${BASE()}/ui/imports/${IMPORT_ID}/remove`, { form: { _csrf: csrf }, maxRedirects: 0 });
  check(r.status() === 403, `a forged import removal by a non-admin: ${r.status()}`);
  check((await r.text()).includes('admin'), 'the refusal says an admin is needed');
  for (const dry of ['1', '0']) {
    r = await page.request.post(`${BASE()}/ui/storage/gc?dry_run=${dry}`, { form: { _csrf: csrf }, maxRedirects: 0 });
    check(r.status() === 403, `a forged GC (dry_run=${dry}) by a non-admin: ${r.status()}`);
  }

  await context.clearCookies();
  r = await page.request.post(url, { form: { _csrf: csrf }, maxRedirects: 0 });
  check(r.status() === 403, `a token replayed without its session cookie: ${r.status()}`);
});
