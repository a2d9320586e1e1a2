/**
 * The gateway's TLS material. By default a local CA and a server certificate for `*.<domain>`,
 * `<domain>`, `localhost`, `127.0.0.1` and `::1`, generated with the openssl command line into a
 * directory (keys 0600) and reused while they are valid for 30 more days and cover the domain.
 * Clients trust `ca.crt` (e.g. `curl --cacert <dir>/ca.crt`, NODE_EXTRA_CA_CERTS, the browser's
 * authority list). Or bring your own certificate and key files.
 */
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { GatewayTlsError } from './errors.js';

export type GatewayTlsOptions =
  /** Generate (or reuse) a local CA and certificate in this directory. */
  | { dir: string }
  /** Use these PEM files (the certificate file may hold the chain). */
  | { certFile: string; keyFile: string };

export interface TlsMaterial {
  cert: string;
  key: string;
  /** The local CA's certificate (PEM), when generated; clients must trust it. */
  ca?: string;
  caFile?: string;
}

const CERT_DAYS = 397;
const CA_DAYS = 3650;
const RENEW_BEFORE_MS = 30 * 86_400_000; // 30 days

function sansFor(domain: string): string[] {
  return [
    `DNS:*.${domain}`,
    `DNS:${domain}`,
    'DNS:localhost',
    'IP Address:127.0.0.1',
    'IP Address:0:0:0:0:0:0:0:1',
  ];
}

/** True when `certPem` is valid for RENEW_BEFORE_MS more and lists every SAN the domain needs. */
function stillGood(certPem: string, domain: string): boolean {
  try {
    const c = new X509Certificate(certPem);
    if (Date.parse(c.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    const have = (c.subjectAltName ?? '').split(', ');
    return sansFor(domain).every((s) => have.includes(s));
  } catch {
    return false;
  }
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeoutMs: 60_000 });
  } catch (err) {
    throw new GatewayTlsError(`openssl ${args[0]} failed while generating the gateway certificate`, err);
  }
}

/**
 * Loads the TLS material. With `{dir}`: reuses `<dir>/{ca.crt,server.crt,server.key}` when the
 * certificate is valid for 30 more days and covers `domain`, otherwise generates them (the CA is
 * kept if present, so clients keep trusting it). Files are written to a temporary directory and
 * renamed into place; keys are 0600. Throws GatewayTlsError.
 */
export async function loadGatewayTls(opts: GatewayTlsOptions, domain: string): Promise<TlsMaterial> {
  if ('certFile' in opts) {
    try {
      return { cert: await readFile(opts.certFile, 'utf8'), key: await readFile(opts.keyFile, 'utf8') };
    } catch (err) {
      throw new GatewayTlsError(
        `cannot read the TLS certificate ${opts.certFile} or key ${opts.keyFile}`,
        err,
      );
    }
  }
  const dir = opts.dir;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const read = (f: string) => readFile(join(dir, f), 'utf8').catch(() => undefined);
  const [ca, caKey, cert, key] = await Promise.all([
    read('ca.crt'),
    read('ca.key'),
    read('server.crt'),
    read('server.key'),
  ]);
  if (ca && cert && key && stillGood(cert, domain)) return { cert, key, ca, caFile: join(dir, 'ca.crt') };

  const work = await mkdtemp(join(dir, '.gen-'));
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    const haveCa =
      ca !== undefined &&
      caKey !== undefined &&
      Date.parse(new X509Certificate(ca).validTo) - Date.now() > RENEW_BEFORE_MS;
    if (haveCa) {
      await writeFile(join(work, 'ca.crt'), ca);
      await writeFile(join(work, 'ca.key'), caKey, { mode: 0o600 });
    } else {
      await openssl(
        [
          'req',
          '-x509',
          ...ec,
          '-keyout',
          'ca.key',
          '-out',
          'ca.crt',
          '-days',
          String(CA_DAYS),
          '-subj',
          '/CN=Hearth local CA',
          '-addext',
          'basicConstraints=critical,CA:TRUE',
          '-addext',
          'keyUsage=critical,keyCertSign,cRLSign',
        ],
        work,
      );
    }
    await openssl(
      ['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=*.${domain}`],
      work,
    );
    await writeFile(
      join(work, 'ext.cnf'),
      [
        `subjectAltName=${sansFor(domain)
          .map((s) => s.replace('IP Address:', 'IP:').replace('0:0:0:0:0:0:0:1', '::1'))
          .join(',')}`,
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        '',
      ].join('\n'),
    );
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        'server.csr',
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        'server.crt',
        '-days',
        String(CERT_DAYS),
        '-extfile',
        'ext.cnf',
      ],
      work,
    );
    await chmod(join(work, 'ca.key'), 0o600);
    await chmod(join(work, 'server.key'), 0o600);
    // Keys first, certificates last: a reader that sees the new certificate finds its key.
    for (const f of ['ca.key', 'server.key', 'ca.crt', 'server.crt'])
      await rename(join(work, f), join(dir, f));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return {
    cert: await readFile(join(dir, 'server.crt'), 'utf8'),
    key: await readFile(join(dir, 'server.key'), 'utf8'),
    ca: await readFile(join(dir, 'ca.crt'), 'utf8'),
    caFile: join(dir, 'ca.crt'),
  };
}
