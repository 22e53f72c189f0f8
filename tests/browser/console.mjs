// The admin console in headless Chromium: it lists the servers and a room with its members,
// and kicks one of them.
//   node console.mjs <console url with #token=...> <room> <user to kick> <screenshot.png>
// Exits non-zero, saying what was wrong, when the page does not behave.
import { launch } from './launch.mjs';

const [url, room, victim, screenshot] = process.argv.slice(2);
if (!url || !room || !victim || !screenshot) {
  console.error('usage: node console.mjs <url> <room> <user> <screenshot.png>');
  process.exit(2);
}

const browser = await launch();
const timeout = 10000;
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1150, height: 760 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => { console.error('page error:', e.message); failed = true; });
  await page.goto(url);
  await page.locator('#servers td', { hasText: 'connector-server-1' }).first().waitFor({ timeout });
  await page.locator('#servers .state.ready').first().waitFor({ timeout });
  await page.locator('#servers td', { hasText: 'chat-server-1' }).first().waitFor({ timeout });
  const row = page.locator('#rooms tr.room', { hasText: room }).first();
  await row.waitFor({ timeout });
  const count = await row.locator('td.num').textContent();
  if (count.trim() !== '2') throw new Error(`room ${room} shows ${count} members, not 2`);
  await row.click();
  await page.locator('#members td', { hasText: victim }).first().waitFor({ timeout });
  // Let the rates get two samples, so the picture shows them.
  await page.waitForTimeout(2500);
  await page.screenshot({ path: screenshot });
  await page.locator('#members tr', { hasText: victim }).locator('button.kick').click();
  await page.locator('#broadcast-result', { hasText: 'kicked 1 session' }).waitFor({ timeout });
  await page.locator('#members td', { hasText: victim }).first().waitFor({ state: 'detached', timeout });
  console.log('console ok');
} catch (e) {
  console.error('console test failed:', e.message);
  failed = true;
}
await browser.close();
process.exit(failed ? 1 : 0);
