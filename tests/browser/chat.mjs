// Two people chat through the Shaddock web client in headless Chromium.
//   node chat.mjs <page url with ?gate=host:port> <screenshot.png>
// Exits non-zero, saying what was wrong, when the page does not behave.
import { launch } from './launch.mjs';

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error('usage: node chat.mjs <url> <screenshot.png>');
  process.exit(2);
}

const browser = await launch();

const timeout = 10000;
async function open() {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(url);
  return page;
}

async function login(page, name, room) {
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#login-button');
}

async function expectText(page, selector, text) {
  await page.locator(selector, { hasText: text }).first().waitFor({ timeout });
}

async function say(page, text, target = '*') {
  await page.selectOption('#target', target);
  await page.fill('#entry', text);
  await page.click('#send');
}

let failed = false;
try {
  const alice = await open();
  await login(alice, 'alice', 'lobby');
  await alice.locator('#chat').waitFor({ state: 'visible', timeout });
  await expectText(alice, '#users li', 'alice');

  const bob = await open();
  await login(bob, 'bob', 'lobby');
  await bob.locator('#chat').waitFor({ state: 'visible', timeout });
  await expectText(bob, '#users li', 'alice');
  await expectText(alice, '#users li', 'bob');
  await expectText(alice, '#messages li.system', 'bob joined');

  // Public message: both see it.
  await say(alice, 'hello everyone');
  await expectText(alice, '#messages li.public', 'hello everyone');
  await expectText(bob, '#messages li.public', 'hello everyone');

  // Private message: only its target sees it (and the sender's local echo).
  await say(bob, 'just for alice', 'alice');
  await expectText(alice, '#messages li.private', '(to you) just for alice');
  await expectText(bob, '#messages li.private', '(to alice) just for alice');
  const bobCopies = await bob.locator('#messages li', { hasText: 'just for alice' }).count();
  if (bobCopies !== 1) throw new Error(`bob sees his private message ${bobCopies} times`);

  await say(alice, 'welcome bob!');
  await expectText(bob, '#messages li.public', 'welcome bob!');
  await alice.screenshot({ path: screenshot });

  // A taken name is refused with a clear message.
  const again = await open();
  await login(again, 'alice', 'lobby');
  await expectText(again, '#login-error', 'Please change your name');

  // An unreachable server is said so.
  const lost = await browser.newPage();
  await lost.goto(url.replace(/gate=[^&]*/, 'gate=127.0.0.1:1'));
  await login(lost, 'carol', 'lobby');
  await expectText(lost, '#login-error', 'unreachable');

  // Bob leaves: alice is told.
  await bob.click('#leave');
  await expectText(alice, '#messages li.system', 'bob left');
  await alice.locator('#users li', { hasText: 'bob' }).waitFor({ state: 'detached', timeout });

  await say(alice, 'see you');
  await expectText(alice, '#messages li.public', 'see you');
  console.log(`browser chat ok; screenshot ${screenshot}`);
} catch (e) {
  failed = true;
  console.error('browser chat FAILED:', e.message);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
