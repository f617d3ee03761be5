import {
  AnonymousCredential,
  ContainerClient,
  RestError,
  StorageSharedKeyCredential,
  newPipeline,
  type RequestPolicy,
  type RequestPolicyFactory,
  type WebResource,
} from '@azure/storage-blob';
import { EdgeError, ErrorCodes } from '../errors.js';

/**
 * The storage service version every request carries. Blob Storage on IoT Edge refuses versions
 * newer than its own, and @azure/storage-blob has no option to choose one (it sends its latest);
 * 2019-07-07 is the one the module is known to accept (docs/capture.md, "The API-version trap").
 */
export const BLOB_API_VERSION = '2019-07-07';

/**
 * Sets `x-ms-version` on every request. Added to the pipeline's factories, it runs in the
 * pipeline's main phase, before the Sign phase where Shared Key signing reads the headers: the
 * version is part of the string to sign, so setting it after signing would break the signature.
 */
export const apiVersionPolicy: RequestPolicyFactory = {
  create(next: RequestPolicy): RequestPolicy {
    return {
      sendRequest(request: WebResource) {
        request.headers.set('x-ms-version', BLOB_API_VERSION);
        return next.sendRequest(request);
      },
    };
  },
};

/** Where captures go: a connection string's account, or a container SAS. Both are secrets. */
export interface BlobTarget {
  connectionString?: string;
  sasUrl?: string;
  container: string;
}

function parseConnectionString(cs: string): { endpoint: string; name: string; key: string } {
  const parts = new Map<string, string>();
  for (const kv of cs.split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) parts.set(kv.slice(0, i).trim().toLowerCase(), kv.slice(i + 1).trim());
  }
  const name = parts.get('accountname');
  const key = parts.get('accountkey');
  const endpoint =
    parts.get('blobendpoint') ??
    (name
      ? `${parts.get('defaultendpointsprotocol') ?? 'https'}://${name}.blob.${parts.get('endpointsuffix') ?? 'core.windows.net'}`
      : undefined);
  if (!name || !key || !endpoint) {
    // The message never repeats the string: it holds the account key.
    throw new EdgeError(
      ErrorCodes.CONFIG_INVALID,
      'CAPTURE_BLOB_CONNECTION_STRING needs AccountName, AccountKey and BlobEndpoint (or DefaultEndpointsProtocol)',
    );
  }
  return { endpoint: endpoint.replace(/\/+$/, ''), name, key };
}

/**
 * A container client whose every request carries {@link BLOB_API_VERSION}. The SDK's own retries
 * are off: the upload queue retries with its own backoff, across restarts.
 */
export function containerClient(target: BlobTarget): { client: ContainerClient; canCreate: boolean } {
  if (target.sasUrl) {
    const pipeline = newPipeline(new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
    pipeline.factories.push(apiVersionPolicy);
    return { client: new ContainerClient(target.sasUrl, pipeline), canCreate: false };
  }
  if (!target.connectionString) {
    throw new EdgeError(
      ErrorCodes.CONFIG_INVALID,
      'no blob target: set CAPTURE_BLOB_CONNECTION_STRING or capture.upload.sasUrl',
    );
  }
  const { endpoint, name, key } = parseConnectionString(target.connectionString);
  const pipeline = newPipeline(new StorageSharedKeyCredential(name, key), { retryOptions: { maxTries: 1 } });
  pipeline.factories.push(apiVersionPolicy);
  return { client: new ContainerClient(`${endpoint}/${target.container}`, pipeline), canCreate: true };
}

/** What a failed blob request means for the queue; never carries a URL (a SAS is in it). */
export interface BlobFailure {
  /** 4xx other than 408/429: the server refuses this blob for good. */
  permanent: boolean;
  status: number | undefined;
  code: string;
  message: string;
}

export function classify(err: unknown): BlobFailure {
  if (err instanceof RestError) {
    const status = err.statusCode;
    const permanent =
      status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
    return {
      permanent,
      status,
      code: err.code ?? (status ? `HTTP_${status}` : 'NETWORK'),
      message: status ? `blob storage answered ${status}` : 'blob storage unreachable',
    };
  }
  const code = (err as { code?: unknown } | null)?.code;
  return {
    permanent: false,
    status: undefined,
    code: typeof code === 'string' ? code : 'NETWORK',
    message: 'blob storage unreachable',
  };
}
