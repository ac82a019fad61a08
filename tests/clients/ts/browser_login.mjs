// A person logging in through Stockade's page in a real headless Chromium
// (tests/browser_login.rs). Usage:
//   node browser_login.mjs CHROMIUM AUTHORIZE_URL PASSWORD approve|deny
// Opens the authorization URL, types the password, clicks the button and prints
// one JSON line: where the browser ended up, the page's text, and the console
// messages (a Content-Security-Policy violation shows there).
import puppeteer from "puppeteer-core";

const [chromium, url, password, action] = process.argv.slice(2);
if (!chromium || !url || password === undefined || !["approve", "deny"].includes(action)) {
  console.error("usage: browser_login.mjs CHROMIUM AUTHORIZE_URL PASSWORD approve|deny");
  process.exit(2);
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
});
const out = { console: [] };
try {
  const page = await browser.newPage();
  page.on("console", (m) => out.console.push(m.text()));
  const first = await page.goto(url, { waitUntil: "load" });
  out.login_status = first.status();
  out.login_title = await page.title();
  await page.type("#p", password);
  let navigated = true;
  await Promise.all([
    page.waitForNavigation({ waitUntil: "load", timeout: 15000 }).catch((e) => {
      navigated = false;
      out.navigation_error = String(e);
    }),
    page.click(`button[value=${action}]`),
  ]);
  out.navigated = navigated;
  out.url = page.url();
  out.text = await page.evaluate(() => document.body ? document.body.innerText : "");
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
