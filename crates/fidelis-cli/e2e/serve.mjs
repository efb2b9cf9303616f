// End-to-end test of `fidelis serve` in a real browser: Debian's Chromium driven by
// playwright-core (no browser download). It starts the server on the organism, runs a
// context-attribution preset in the page, checks the highlighted tokens, runs the exported
// shell command and compares its JSON with the page's download, then discovers a circuit in
// the Circuit tab and checks the curve, the graph and the size slider. A second server with
// --token checks that the page opened from the address it prints works and that a browser
// without the token gets 401.
//
//   node serve.mjs --binary ../../../target/debug/fidelis [--screenshots ../../../docs]
//
// Environment: CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const binary = path.resolve(opt("--binary") ?? "target/debug/fidelis");
const shots = opt("--screenshots");
const started = Date.now();
// The encoder-decoder organism, served beside the decoder one (its presets name this path, so
// the test runs from the repository root, as CI does).
const SEQ2SEQ = "models/seq2seq-organism";
const secs = () => ((Date.now() - started) / 1000).toFixed(1);

// Starts `fidelis serve` on a free port; resolves with its URL from the line it prints (with
// a token: the `open` line, whose URL carries it).
function startServer(extra = []) {
  const models = extra.includes("--token") ? ["--model", "organism"] : ["--model", "organism", "--model", SEQ2SEQ];
  const server = spawn(binary, ["serve", ...models, "--port", "0", ...extra], { stdio: ["ignore", "pipe", "inherit"] });
  const line = extra.includes("--token") ? /open (http:\/\/\S+)/ : /listening on (http:\/\/\S+)/;
  const url = new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("the server did not start in 60 s")), 60_000);
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const m = line.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    server.on("exit", (code) => reject(new Error(`the server exited with ${code}`)));
  });
  return { server, url };
}

// Equal JSON values, numbers within a relative 1e-5 (the page's run and the shell's run are
// separate processes; they are expected to agree exactly, this only keeps the message useful).
function compareJson(a, b, where = "$") {
  if (typeof a === "number" && typeof b === "number") {
    const tol = 1e-5 * Math.max(1, Math.abs(a), Math.abs(b));
    assert.ok(Math.abs(a - b) <= tol, `${where}: ${a} vs ${b}`);
    return;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    assert.ok(Array.isArray(a) && Array.isArray(b) && a.length === b.length, `${where}: arrays differ`);
    a.forEach((v, i) => compareJson(v, b[i], `${where}[${i}]`));
    return;
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${where}: keys differ`);
    for (const k of Object.keys(a)) compareJson(a[k], b[k], `${where}.${k}`);
    return;
  }
  assert.equal(a, b, where);
}

async function contextTab(page) {
  // What the tab shows is explained, with the paper cited, and the colours have a legend.
  const about = await page.textContent("#ctx-about");
  for (const want of ["PECoRe", "Sarti", "ICLR 2024", "CTI", "CCI", "Inseq"]) assert.ok(about.includes(want), `the context tab's explanation names ${want}`);
  const preset = await page.inputValue("#ctx-preset");
  assert.equal(preset, "organism-qa", "the first organism preset is selected on load");
  // Parameters are editable; λ = 0 keeps every answer token above the mean CTI score, so the
  // check below does not hang on how the (retrainable) organism scores its answer.
  await page.fill("input[name='cti_std']", "0");
  const t0 = Date.now();
  await page.click("#ctx-run");
  await page.waitForSelector("#ctx-result:not([hidden])", { timeout: 120_000 });
  const presetMs = Date.now() - t0;
  const error = await page.textContent("#ctx-error");
  assert.equal(error.trim(), "", `no error: ${error}`);
  const sensitive = page.locator("#ctx-output .tok.sensitive");
  const nSensitive = await sensitive.count();
  assert.ok(nSensitive > 0, "context-sensitive tokens are highlighted in the answer");
  await sensitive.first().hover();
  const scored = await page.locator("#ctx-context .tok[title^='score']").count();
  assert.ok(scored > 0, "hovering a sensitive token scores the context tokens");
  const cues = await page.locator("#ctx-context .tok.cue").count();
  const answer = await page.textContent("#ctx-output");
  assert.equal(await page.locator("#ctx-legend .swatch").count(), 4, "the token colours have a legend");
  assert.match(await page.textContent("#ctx-legend"), /context-sensitive.*cue/s);

  const href = await page.getAttribute("#ctx-download", "href");
  const download = await page.evaluate(async (h) => (await fetch(h)).text(), href);
  const command = (await page.textContent("#ctx-export-cli")).trim();
  assert.ok(command.startsWith("fidelis context --model organism"), command);
  assert.ok(command.includes("--cti-std 0"), command);
  assert.match(await page.textContent("#ctx-export-rust"), /attribute_context\(&model, &cfg\)/);
  const inseq = await checkInseqExport(page);
  const dir = mkdtempSync(path.join(tmpdir(), "fidelis-e2e-"));
  const env = { ...process.env, PATH: `${path.dirname(binary)}:${process.env.PATH}` };
  const t1 = Date.now();
  execFileSync("bash", ["-c", command], { cwd: dir, env, stdio: ["ignore", "ignore", "inherit"] });
  const shellMs = Date.now() - t1;
  const fromShell = JSON.parse(readFileSync(path.join(dir, "context.json"), "utf8"));
  compareJson(JSON.parse(download), fromShell);
  const identical = download === readFileSync(path.join(dir, "context.json"), "utf8");
  console.log(`  answer ${JSON.stringify(answer)}: ${nSensitive} sensitive token(s), ${cues} cue(s); preset ${presetMs} ms in the page, exported command ${shellMs} ms; JSON ${identical ? "byte-identical" : "equal within 1e-5"}`);
  console.log(`  command: ${command}`);
  console.log(`  inseq: ${inseq}`);
  await page.mouse.move(0, 0);
  if (shots) await page.screenshot({ path: path.join(shots, "serve-context.png"), fullPage: true });
}

// Splits a POSIX shell line of bare and single-quoted words (what the page exports).
function shellWords(line) {
  const words = [];
  let word = "", quoted = false, inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "'") { quoted = !quoted; inWord = true; }
    else if (c === "\\" && !quoted) { word += line[++i] ?? ""; inWord = true; }
    else if (c === " " && !quoted) { if (inWord) words.push(word); word = ""; inWord = false; }
    else { word += c; inWord = true; }
  }
  assert.ok(!quoted, "quotes are balanced");
  if (inWord) words.push(word);
  return words;
}

// The exported Inseq command is well-formed: `inseq attribute-context`, then flag/value pairs
// with Inseq's snake_case names, the inputs present, JSON where Inseq reads a dict; the Python
// snippet calls attribute_context. With INSEQ set to an `inseq` executable, the command is run
// and its generated output compared with the page's.
async function checkInseqExport(page) {
  const command = (await page.textContent("#ctx-export-inseq")).trim();
  const words = shellWords(command);
  assert.deepEqual(words.slice(0, 2), ["inseq", "attribute-context"], command);
  const rest = words.slice(2);
  assert.equal(rest.length % 2, 0, "every flag has a value");
  const args = {};
  for (let i = 0; i < rest.length; i += 2) {
    assert.match(rest[i], /^--[a-z_]+$/, `an Inseq flag: ${rest[i]}`);
    args[rest[i].slice(2)] = rest[i + 1];
  }
  for (const need of ["model_name_or_path", "input_context_text", "input_current_text", "save_path"]) assert.ok(need in args, `${need} in ${command}`);
  for (const [k, v] of Object.entries(args)) if (k.endsWith("_kwargs")) JSON.parse(v);
  assert.match(await page.textContent("#ctx-export-inseq-python"), /AttributeContextArgs\([\s\S]*attribute_context\(args\)/);
  if (process.env.INSEQ) {
    const dir = mkdtempSync(path.join(tmpdir(), "fidelis-inseq-"));
    execFileSync(process.env.INSEQ, words.slice(1), { cwd: dir, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, HF_HUB_OFFLINE: "1" } });
    const out = JSON.parse(readFileSync(path.join(dir, "context.json"), "utf8"));
    console.log(`  inseq ran: output ${JSON.stringify(out.output_current)}, ${out.cci_scores.length} context-sensitive token(s)`);
  }
  return command;
}

// An encoder-decoder preset: the seq2seq organism translates "it" by its antecedent's gender.
// The pronoun is flagged, its cues include the antecedent, the output context is shown with
// its own scores, and the exported Inseq command carries the output context.
async function seq2seqContext(page) {
  await page.click("#tab-context");
  await page.selectOption("#ctx-model", SEQ2SEQ);
  await page.selectOption("#ctx-preset", "seq2seq-organism-pronoun");
  assert.equal(await page.inputValue("input[name='output_context']"), "l' horloge suit l' ampoule .");
  await page.click("#ctx-run");
  await page.waitForFunction(() => /done/.test(document.querySelector("#ctx-status").textContent), null, { timeout: 120_000 });
  const error = await page.textContent("#ctx-error");
  assert.equal(error.trim(), "", `no error: ${error}`);
  const tokens = (await page.locator("#ctx-output .tok").allTextContents()).map((t) => t.trim());
  const answer = tokens.join(" ");
  assert.equal(tokens[0], "elle", `the clock is feminine: ${answer}`);
  const sensitive = await page.locator("#ctx-output .tok.sensitive").allTextContents();
  assert.ok(sensitive.map((t) => t.trim()).includes("elle"), `the pronoun is context-sensitive: ${sensitive}`);
  await page.locator("#ctx-output .tok.sensitive", { hasText: "elle" }).first().click();
  const cues = (await page.locator("#ctx-cues td:first-child").allTextContents()).join(" ");
  assert.ok(/clock|horloge/.test(cues), `the antecedent is among the cues: ${cues}`);
  assert.ok(await page.isVisible("#ctx-output-context-box"), "the output context is shown");
  const inseq = await checkInseqExport(page);
  const args = shellWords(inseq);
  assert.equal(args[args.indexOf("--output_context_text") + 1], "l' horloge suit l' ampoule .", inseq);
  console.log(`  encoder-decoder: "${answer}", cues ${cues}`);
  console.log(`  inseq: ${inseq}`);
}

async function circuitTab(page) {
  await page.click("#tab-circuit");
  assert.ok(await page.isVisible("#circ-form"));
  const t0 = Date.now();
  await page.click("#circ-run");
  await page.waitForSelector("#circ-progress:not([hidden])", { timeout: 10_000 }).catch(() => {});
  await page.waitForSelector("#circ-result:not([hidden])", { timeout: 300_000 });
  const runMs = Date.now() - t0;
  const error = await page.textContent("#circ-error");
  assert.equal(error.trim(), "", `no error: ${error}`);
  const points = await page.locator("#curve-svg circle").count();
  assert.ok(points >= 5, `the curve has its points (${points})`);
  assert.equal(await page.locator("#curve-svg polyline.curve-line").count(), 1, "the curve is drawn");
  const edges = await page.locator("#graph-svg path.edge").count();
  assert.ok(edges > 0, "the circuit graph has edges");
  const label = await page.textContent("#circ-size-label");
  assert.match(label, /faithfulness -?\d/);
  // Move the slider to the other end: the label and the graph follow.
  const max = Number(await page.getAttribute("#circ-slider", "max"));
  const at = Number(await page.inputValue("#circ-slider"));
  const target = at === max ? 0 : max;
  await page.locator("#circ-slider").fill(String(target));
  const label2 = await page.textContent("#circ-size-label");
  assert.notEqual(label2, label, "the slider changes the size shown");
  const edges2 = await page.locator("#graph-svg path.edge").count();
  assert.ok(target > at ? edges2 >= edges : edges2 <= edges, "a larger circuit draws at least as many edges");
  await page.locator("#circ-slider").fill(String(Math.min(max, Math.max(0, await firstFaithfulIndex(page)))));
  await page.locator("#graph-svg path.edge").first().dispatchEvent("mouseenter");
  assert.match(await page.textContent("#circ-hover"), /->.*score/);
  const command = await page.textContent("#circ-export-cli");
  assert.ok(command.startsWith("fidelis circuit discover --model organism --task ioi"), command);
  const about = await page.textContent("#circ-about");
  for (const want of ["EAP-IG", "2403.17806", "2310.10348", "MIB", "CPR", "CMD"]) assert.ok(about.includes(want), `the circuit tab's explanation names ${want}`);
  assert.match(await page.textContent("#curve-svg .legend"), /full model/, "the curve has a legend");
  assert.match(await page.textContent("#graph-svg .legend"), /positive score.*negative score.*\|score\|.*attention head/s, "the graph has a legend");
  const saved = await saveFigures(page);
  console.log(`  circuit: ${points} curve points, ${edges} edges drawn at "${label}"; run ${runMs} ms; saved ${saved.join(", ")}`);
  if (shots) await page.screenshot({ path: path.join(shots, "serve-circuit.png"), fullPage: true });
}

// Clicks each figure's SVG and PNG buttons and checks the downloaded files: standalone SVG
// documents that keep their legend (and, for the graph, its edges), and PNGs at three times the
// figure's size. Returns what was saved.
async function saveFigures(page) {
  const saved = [];
  for (const [figure, size, mustHave] of [["curve", 460, "full model"], ["graph", 560, 'class="edge"']]) {
    for (const format of ["svg", "png"]) {
      const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click(`#${figure}-save-${format}`)]);
      const bytes = readFileSync(await download.path());
      const name = download.suggestedFilename();
      assert.ok(name.endsWith(`.${format}`), name);
      if (format === "svg") {
        const text = bytes.toString("utf8");
        assert.ok(text.startsWith("<?xml") && text.includes('xmlns="http://www.w3.org/2000/svg"'), `${name} is a standalone SVG`);
        assert.ok(text.includes('class="legend"') && text.includes(mustHave), `${name} keeps its legend and content`);
      } else {
        assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${name} is a PNG`);
        assert.equal(bytes.readUInt32BE(16), 3 * size, `${name} is three times the figure's width`);
      }
      saved.push(`${name} (${bytes.length} bytes)`);
    }
  }
  return saved;
}

// A server with a token: the printed address sets the cookie and the page works; a browser
// context without the cookie gets 401 for the page and the API.
async function tokenPage(browser) {
  const token = "e2e-token-0123456789abcdef";
  const { server, url: urlPromise } = startServer(["--token", token]);
  try {
    const url = await urlPromise;
    assert.ok(url.endsWith(`/?token=${token}`), url);
    const base = url.slice(0, url.indexOf("/?"));
    const withToken = await browser.newContext();
    const page = await withToken.newPage();
    await page.goto(url);
    await page.waitForSelector("body[data-ready='true']", { timeout: 30_000 });
    assert.equal(new URL(page.url()).search, "", "the token leaves the address bar");
    const info = await page.evaluate(async () => (await fetch("/api/info")).status);
    assert.equal(info, 200, "the page's API calls carry the cookie");
    await withToken.close();
    const without = await browser.newContext();
    const bare = await without.newPage();
    const resp = await bare.goto(base + "/");
    assert.equal(resp.status(), 401, "no token, no page");
    const api = await bare.evaluate(async () => (await fetch("/api/info")).status);
    assert.equal(api, 401, "no token, no API");
    await without.close();
    console.log(`  token: ${base}/?token=… sets the cookie; without it 401`);
  } finally {
    server.kill();
  }
}

// The slider index of the smallest circuit with faithfulness >= 0.8 (as the page starts).
async function firstFaithfulIndex(page) {
  return page.evaluate(() => {
    const pts = [...document.querySelectorAll("#curve-svg circle")];
    return Math.max(0, pts.findIndex((c) => /faithfulness (\S+)/.exec(c.textContent) && Number(/faithfulness (\S+)/.exec(c.textContent)[1]) >= 0.8));
  });
}

const { server, url: urlPromise } = startServer();
let browser;
let passed = 0, failed = 0;
try {
  const url = await urlPromise;
  console.log(`server at ${url} (${secs()} s)`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => { console.log(`page error: ${e.message}`); failed++; });
  await page.goto(url);
  await page.waitForSelector("body[data-ready='true']", { timeout: 30_000 });
  for (const [name, test] of [["context tab", contextTab], ["circuit tab", circuitTab], ["encoder-decoder context", seq2seqContext], ["token", () => tokenPage(browser)]]) {
    try {
      await test(page);
      passed++;
      console.log(`ok - ${name} (${secs()} s)`);
    } catch (e) {
      failed++;
      console.log(`not ok - ${name}: ${e.stack}`);
      if (shots) await page.screenshot({ path: path.join(tmpdir(), `fidelis-e2e-${name.replace(" ", "-")}-failure.png`), fullPage: true }).catch(() => {});
    }
  }
} catch (e) {
  failed++;
  console.log(`not ok - setup: ${e.stack}`);
} finally {
  if (browser) await browser.close();
  server.kill();
}
console.log(`browser test took ${secs()} s`);
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
