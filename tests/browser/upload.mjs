// Upload imgpkg tars through the upload page: a real bundle tar (the report appears), a big
// tar over a throttled connection (the progress bar advances, bytes and rate shown), and a
// hostile tar (the refusal names the tar entry).
import { check, env, run, shot, signIn } from './lib.mjs';

// Choose `path`, submit, and record every state of the progress bar until the page says
// the request is done.
async function upload(page, repo, path) {
  await page.fill('input[name="repository"]', repo);
  await page.setInputFiles('input[type="file"]', path);
  return page.evaluate(() => new Promise((resolve) => {
    const status = document.getElementById('upload-status');
    const bar = document.getElementById('upload-progress');
    const text = document.getElementById('upload-text');
    const values = [];
    const texts = [];
    new MutationObserver(() => {
      values.push(Number(bar.value));
      texts.push(text.textContent);
      if (status.hasAttribute('data-done')) {
        resolve({ values, texts, max: Number(bar.max), done: status.getAttribute('data-done') });
      }
    }).observe(status, { attributes: true, subtree: true, childList: true, characterData: true });
    document.querySelector('#upload-form button[type="submit"]').click();
  }));
}

await run(async ({ page, expectFailure }) => {
  await signIn(page, env('AIRDOCK_USER'), env('AIRDOCK_PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('header nav a:text("Upload")')]);
  check(new URL(page.url()).pathname === '/ui/upload', 'the Upload page is in the navigation of an admin');

  // A real `imgpkg copy --to-tar` bundle.
  let r = await upload(page, env('BUNDLE_REPO'), env('BUNDLE_TAR'));
  check(r.done === '201', `the bundle tar is imported (${r.done})`);
  const report = await page.textContent('#upload-result');
  check(report.includes(`Imported into ${env('BUNDLE_REPO')}`), 'the report names the repository');
  check(await page.locator('#upload-result tbody tr').count() >= 2, 'the report lists the manifests');
  check(report.includes('imgpkg pull -b'), 'the report gives the imgpkg pull command of the bundle');
  await shot(page, 'upload-report');

  // A big tar over a slow link: the bar moves, the text shows bytes and rate.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 8 * 1024 * 1024,
  });
  r = await upload(page, env('BIG_REPO'), env('BIG_TAR'));
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });
  check(r.done === '201', `the big tar is imported (${r.done})`);
  const partial = [...new Set(r.values.filter((v) => v > 0 && v < r.max))];
  check(partial.length >= 3, `the progress bar advanced through ${partial.length} intermediate values of ${r.max} bytes`);
  check(r.texts.some((t) => / of \d+(\.\d+)? MiB · \d+(\.\d+)? (KiB|MiB)\/s$/.test(t)), `bytes and rate shown: ${r.texts.find((t) => t.includes('/s'))}`);

  // A hostile tar: refused, the entry named, nothing imported.
  expectFailure.add(new URL(`/ui/upload?repository=${encodeURIComponent(env('HOSTILE_REPO'))}`, page.url()).href);
  r = await upload(page, env('HOSTILE_REPO'), env('HOSTILE_TAR'));
  check(r.done === '400', `the hostile tar is refused (${r.done})`);
  check((await page.textContent('#upload-result .entry')) === env('HOSTILE_ENTRY'), 'the refusal names the tar entry');
  await shot(page, 'upload-refused');
});
