// Mints the benchmark's tokens with the peer library itself (npm `jose`), so both verifiers check
// byte-identical, realistic tokens: RFC 9068 access tokens (typ at+jwt) signed RS256 (RSA 2048)
// and ES256 (P-256), one key each, published as a JWK Set.
//
//   node bench/jose/gen_tokens.mjs OUT.json [COUNT]
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../tools/node/package.json'));
const jose = await import(pathToFileURL(require.resolve('jose')).href);

const [out, countArg] = process.argv.slice(2);
const count = Number(countArg || 256);
const issuer = 'https://idp.example.com';
const audience = 'https://gpuwarden.example.com/api';

const keys = {
  RS256: await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true }),
  ES256: await jose.generateKeyPair('ES256', { extractable: true }),
};
const jwks = { keys: [] };
const tokens = {};
for (const [alg, pair] of Object.entries(keys)) {
  const kid = `${alg.toLowerCase()}-1`;
  jwks.keys.push({ ...(await jose.exportJWK(pair.publicKey)), kid, alg, use: 'sig' });
  tokens[alg] = [];
  for (let i = 0; i < count; i++) {
    tokens[alg].push(await new jose.SignJWT({
      client_id: 'ci-robot', scope: 'api:read api:write', groups: ['ml-team', 'staff'],
      jti: `t-${alg}-${i}`,
    })
      .setProtectedHeader({ alg, kid, typ: 'at+jwt' })
      .setIssuer(issuer).setAudience(audience).setSubject(`user-${i}`)
      .setIssuedAt().setExpirationTime('2h')
      .sign(pair.privateKey));
  }
}
writeFileSync(out, JSON.stringify({ issuer, audience, jwks, tokens }));
console.log(`wrote ${count} RS256 and ${count} ES256 tokens to ${out}`);
