// The peer: npm `jose` verifying the same tokens on Node.js, single thread.
//
//   node bench/jose/jose_bench.mjs TOKENS.json SECONDS
//
// Two modes, the faster counts: `jwks` = createLocalJWKSet + jwtVerify (key selection by kid, as
// a server verifying IdP tokens would), `key` = the right KeyObject handed over directly. Both
// check the signature, iss, aud, exp/nbf/iat and typ at+jwt, like gpuwarden's VerifyJwt.
// Prints: JOSE alg=RS256 mode=jwks tokens_per_sec=N tokens_per_cpu_sec=M (wall and CPU time)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../tools/node/package.json'));
const jose = await import(pathToFileURL(require.resolve('jose')).href);

const [file, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 3);
const data = JSON.parse(readFileSync(file, 'utf8'));
const jwks = jose.createLocalJWKSet(data.jwks);
const options = (alg) => ({ issuer: data.issuer, audience: data.audience, typ: 'at+jwt', algorithms: [alg] });

async function run(alg, mode) {
  const tokens = data.tokens[alg];
  const key = mode === 'key'
    ? await jose.importJWK(data.jwks.keys.find((k) => k.alg === alg), alg)
    : jwks;
  const opts = options(alg);
  for (let i = 0; i < 200; i++) await jose.jwtVerify(tokens[i % tokens.length], key, opts);  // warm-up
  let n = 0;
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < end) {
    for (let i = 0; i < 64; i++, n++) {
      const { payload } = await jose.jwtVerify(tokens[n % tokens.length], key, opts);
      if (!payload.sub) throw new Error('no sub');
    }
    now = process.hrtime.bigint();
  }
  const cpu = process.cpuUsage(cpu0);
  const rate = n / (Number(now - start) / 1e9);
  const cpuRate = n / ((cpu.user + cpu.system) / 1e6);
  console.log(`JOSE alg=${alg} mode=${mode} tokens_per_sec=${Math.round(rate)} tokens_per_cpu_sec=${Math.round(cpuRate)}`);
}

for (const alg of ['RS256', 'ES256']) {
  await run(alg, 'jwks');
  await run(alg, 'key');
}
