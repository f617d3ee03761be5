import { generateKeyPair, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';

/**
 * Throw-away PKI for tests that speak TLS to an emulated IoT Hub / edgeHub: a CA, a server
 * certificate it signed for `localhost` / `127.0.0.1`, and a second CA that signed nothing the
 * server presents (to provoke "unable to verify" failures). All PEM.
 */
export interface TestPki {
  /** The CA that signed `serverCert` — what the fake workload API hands out as trust bundle. */
  caCert: string;
  caKey: string;
  /** Leaf for SAN `DNS:localhost, IP:127.0.0.1`, extendedKeyUsage serverAuth. */
  serverCert: string;
  serverKey: string;
  /** An unrelated CA: trusting only this one must make the TLS handshake fail. */
  otherCaCert: string;
}

const generateRsa = promisify(generateKeyPair);

// Keys come from Node's native generator (milliseconds); node-forge's pure-JS RSA takes seconds.
// node-forge only builds and signs the X.509 structures.
async function rsaKeyPair(): Promise<{
  privateKey: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
}> {
  const { privateKey } = await generateRsa('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const key = forge.pki.privateKeyFromPem(privateKey);
  return { privateKey: key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e) };
}

function serial(): string {
  // A positive, 16-byte serial: clearing the top bit keeps the DER integer non-negative.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

function validity(cert: forge.pki.Certificate, years: number): void {
  const now = Date.now();
  // Backdated an hour so a test host whose clock lags a little still accepts it.
  cert.validity.notBefore = new Date(now - 3_600_000);
  cert.validity.notAfter = new Date(now + years * 365 * 86_400_000);
}

async function createCa(
  commonName: string,
): Promise<{ cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey }> {
  const { privateKey, publicKey } = await rsaKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = serial();
  validity(cert, 10);
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'edge-scorer tests' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(privateKey, forge.md.sha256.create());
  return { cert, key: privateKey };
}

async function issueServerCert(ca: {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}): Promise<{ cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey }> {
  const { privateKey, publicKey } = await rsaKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = serial();
  validity(cert, 2);
  cert.setSubject([{ name: 'commonName', value: 'localhost' }]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        { type: 2, value: 'localhost' }, // DNS
        { type: 7, ip: '127.0.0.1' }, // IP
      ],
    },
    { name: 'subjectKeyIdentifier' },
    // forge derives the key identifier from the issuer's public key.
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return { cert, key: privateKey };
}

async function generate(): Promise<TestPki> {
  const [ca, other] = await Promise.all([
    createCa('edge-scorer test CA'),
    createCa('edge-scorer unrelated CA'),
  ]);
  const server = await issueServerCert(ca);
  return {
    caCert: forge.pki.certificateToPem(ca.cert),
    caKey: forge.pki.privateKeyToPem(ca.key),
    serverCert: forge.pki.certificateToPem(server.cert),
    serverKey: forge.pki.privateKeyToPem(server.key),
    otherCaCert: forge.pki.certificateToPem(other.cert),
  };
}

let cached: Promise<TestPki> | undefined;

/**
 * The PKI for this test process, generated on first use and shared afterwards (each key pair
 * costs tens of milliseconds and every emulator in a file needs the same one).
 */
export function testPki(): Promise<TestPki> {
  cached ??= generate();
  return cached;
}
