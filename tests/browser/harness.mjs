// What the browser tests share: the command line, Chromium through playwright-core,
// the server binary on a free loopback port, and ok/FAIL lines with a count.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

export const WAIT_MS = 10000;

// Loads playwright-core and checks the arguments; exits with a clear message when
// something is missing. Returns {chromium, bin, executablePath}.
export async function setup(name) {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    console.error(`${name}: playwright-core is not installed in tests/browser/node_modules.\n` +
                  'Run `SB_WITH_BROWSER=1 scripts/deps.sh` (./dev test does it).');
    process.exit(1);
  }
  const bin = process.argv[2];
  if (!bin || !fs.existsSync(bin)) {
    console.error(`usage: node tests/browser/${name}.mjs path/to/switchboard`);
    process.exit(2);
  }
  const executablePath = process.env.SB_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    console.error(`${name}: no Chromium at ${executablePath} (apt-get install chromium, or set SB_CHROMIUM)`);
    process.exit(1);
  }
  return { chromium, bin, executablePath };
}

export function launch(chromium, executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
}

// ok/FAIL lines; failures() is how many failed.
export function checker() {
  let failed = 0;
  return {
    check(cond, what, detail) {
      if (cond) {
        console.log(`ok   ${what}`);
      } else {
        failed++;
        console.log(`FAIL ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
      }
    },
    fail(e) {
      failed++;
      console.log('FAIL ' + (e && e.stack ? e.stack : e));
    },
    failures: () => failed,
  };
}

// Starts `bin serve` on 127.0.0.1:0 with cheap password hashing (the tests are about
// the browser, not argon2id) and `extra` arguments; resolves {proc, addr, log()} once
// it listens.
export function startServer(bin, dataDir, extra = []) {
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir,
                '--set', 'auth.password_ops=1', '--set', 'auth.password_mem_kib=64',
                // A browser saturates the CPU: the search index may pause, at most 1 s.
                '--set', 'search.max_yield_s=1', ...extra];
  const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start:\n' + log)), WAIT_MS);
    proc.stderr.on('data', (d) => {
      log += d;
      const m = /event=listening addr=(\S+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, addr: m[1], log: () => log });
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  });
}

export async function stopServer(server) {
  if (!server) return;
  server.proc.removeAllListeners('exit');
  server.proc.kill('SIGTERM');
  await new Promise((r) => { server.proc.on('exit', r); setTimeout(r, 5000); });
}
