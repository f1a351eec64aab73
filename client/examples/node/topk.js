#!/usr/bin/env node
// maxact Node.js client example: the top-k activating patches of one neuron.
//
//   node topk.js MODEL LAYER CHANNEL DATASET OUTDIR [K]
//
// Server: $MAXACT_SERVER (host:port, default 127.0.0.1:50051); bearer token: $MAXACT_TOKEN.
// Writes OUTDIR/rank_1.png ... (the PNG bytes exactly as the server sent them), progress on
// stderr, and ONE JSON document on stdout shaped like `maxact topk --json` (README.md).
// Errors: "maxact-node: error: CODE_NAME (REASON): message" on stderr and exit code 1.
//
// The stubs are generated at run time from the repository's .proto files with
// @grpc/proto-loader; nothing is compiled ahead of time.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROG = 'maxact-node';
const DEFAULT_SERVER = '127.0.0.1:50051';
const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');
const PROTO_FILES = [
  'maxact/v1/model_service.proto',
  'maxact/v1/receptive_field_service.proto',
  'maxact/v1/topk_service.proto',
];
// Patches of large photos exceed gRPC's 4 MiB default; the server allows 64 MiB.
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const EXIT_OK = 0;
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;

// Loader options, used consistently below:
//   keepCase: true   -> fields keep their proto names (images_scanned, input_box, ...)
//   longs: Number    -> int64 fields are plain numbers (image counts and pixel boxes are small)
//   enums: String    -> enum values are their names ('TOP_K_MODE_IMAGE')
//   bytes: Buffer    -> Patch.png is a Buffer, written to disk unchanged
//   defaults: true   -> unset scalar fields read as their zero value
//   oneofs: true     -> a oneof's virtual field (TopKEvent.event) names the set member
const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

const MODE_NAMES = {
  TOP_K_MODE_UNSPECIFIED: 'image',
  TOP_K_MODE_IMAGE: 'image',
  TOP_K_MODE_POSITION: 'position',
};

const USAGE = `usage: node topk.js MODEL LAYER CHANNEL DATASET OUTDIR [K]

  MODEL    model name under the server's model root, without .onnx (e.g. resnet/r50)
  LAYER    ONNX tensor name, exactly as in the graph
  CHANNEL  channel index (>= 0)
  DATASET  dataset folder name under the server's data root
  OUTDIR   folder for rank_1.png ... (created if missing)
  K        number of patches (default 9)

environment: MAXACT_SERVER (default ${DEFAULT_SERVER}), MAXACT_TOKEN (bearer token, optional)`;

class UsageError extends Error {}

class ClientError extends Error {}

function parseArgs(argv) {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE + '\n');
    process.exit(EXIT_OK);
  }
  if (argv.length < 5 || argv.length > 6) {
    throw new UsageError(`expected 5 or 6 arguments, got ${argv.length}`);
  }
  const [model, layer, channelText, dataset, outDir, kText] = argv;
  const channel = parseNonNegativeInt(channelText, 'CHANNEL');
  const k = kText === undefined ? 9 : parseNonNegativeInt(kText, 'K');
  if (k < 1) {
    throw new UsageError('K must be at least 1');
  }
  return { model, layer, channel, dataset, outDir, k };
}

function parseNonNegativeInt(text, name) {
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`${name} must be a non-negative integer, got '${text}'`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value > 2147483647) {
    throw new UsageError(`${name} is too large: ${text}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Errors: gRPC status code name, the ErrorInfo reason from grpc-status-details-bin, the message.

const STATUS_NAMES = Object.fromEntries(
  Object.entries(grpc.status).map(([name, value]) => [value, name]),
);

let statusDecoder; // undefined: not tried yet; null: unavailable

function loadStatusDecoder() {
  if (statusDecoder !== undefined) {
    return statusDecoder;
  }
  statusDecoder = null;
  try {
    // protobufjs comes with @grpc/proto-loader; google.rpc.Status and ErrorInfo are small enough
    // to declare here rather than ship googleapis' protos.
    const protobuf = require('protobufjs');
    const root = protobuf.Root.fromJSON({
      nested: {
        google: {
          nested: {
            protobuf: {
              nested: {
                Any: {
                  fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } },
                },
              },
            },
            rpc: {
              nested: {
                Status: {
                  fields: {
                    code: { type: 'int32', id: 1 },
                    message: { type: 'string', id: 2 },
                    details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
                  },
                },
                ErrorInfo: {
                  fields: {
                    reason: { type: 'string', id: 1 },
                    domain: { type: 'string', id: 2 },
                    metadata: { keyType: 'string', type: 'string', id: 3 },
                  },
                },
              },
            },
          },
        },
      },
    });
    statusDecoder = {
      Status: root.lookupType('google.rpc.Status'),
      ErrorInfo: root.lookupType('google.rpc.ErrorInfo'),
    };
  } catch (_error) {
    statusDecoder = null; // the reason is optional: the code and message still tell the story
  }
  return statusDecoder;
}

function errorInfoReason(error) {
  if (!error || !error.metadata || typeof error.metadata.get !== 'function') {
    return '';
  }
  const values = error.metadata.get('grpc-status-details-bin');
  if (!values || values.length === 0) {
    return '';
  }
  const decoder = loadStatusDecoder();
  if (!decoder) {
    return '';
  }
  try {
    const status = decoder.Status.decode(Buffer.from(values[0]));
    for (const detail of status.details || []) {
      if (String(detail.type_url).endsWith('/google.rpc.ErrorInfo')) {
        return decoder.ErrorInfo.decode(detail.value).reason || '';
      }
    }
  } catch (_error) {
    // a malformed detail must not hide the status itself
  }
  return '';
}

function describeRpcError(error, server) {
  const codeName = STATUS_NAMES[error.code] || 'UNKNOWN';
  const reason = errorInfoReason(error);
  let message = error.details || error.message || '';
  if (error.code === grpc.status.UNAVAILABLE && !reason) {
    message = `cannot reach the maxact server at ${server}: ${message}`;
  }
  return reason ? `${codeName} (${reason}): ${message}` : `${codeName}: ${message}`;
}

// ---------------------------------------------------------------------------------------------
// Stubs and calls.

function loadServices() {
  const definition = protoLoader.loadSync(PROTO_FILES, LOADER_OPTIONS);
  const v1 = grpc.loadPackageDefinition(definition).maxact.v1;
  return {
    ModelService: v1.ModelService,
    ReceptiveFieldService: v1.ReceptiveFieldService,
    TopKService: v1.TopKService,
  };
}

function callMetadata() {
  const metadata = new grpc.Metadata();
  const token = (process.env.MAXACT_TOKEN || '').trim();
  if (token) {
    metadata.set('authorization', `Bearer ${token}`);
  }
  return metadata;
}

function unary(stub, method, request, server) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 120 * 1000);
    stub[method](request, callMetadata(), { deadline }, (error, response) => {
      if (error) {
        reject(new ClientError(describeRpcError(error, server)));
      } else {
        resolve(response);
      }
    });
  });
}

function describeField(rf) {
  const field = rf.receptive_field;
  if (!field || !field.spatial) {
    return 'a flat tensor (its field is the whole image)';
  }
  const g = field.geometry;
  const pair = (values) => (values || []).join('x');
  let text = `size ${pair(g.size)}, stride ${pair(g.stride)}, padding ${pair(g.padding)}`;
  if (field.global_context) {
    text += ' (global context)';
  }
  return text;
}

// The preprocessing the server used (Done.preprocessing) as the Python CLI prints it: only
// the fields that are set; proto3 zero values and unset optionals mean "not set".
function preprocessingJson(p) {
  if (!p) {
    return null;
  }
  const doc = {};
  for (const name of ['size', 'center_crop', 'mean', 'std', 'letterbox']) {
    if (p[name] && p[name].length) {
      doc[name] = p[name];
    }
  }
  for (const name of ['resize_shorter', 'size_multiple']) {
    if (p[name]) {
      doc[name] = p[name];
    }
  }
  for (const name of ['scale', 'pad_value']) {
    if (p[`_${name}`] === name) {
      doc[name] = p[name];
    }
  }
  const orders = { CHANNEL_ORDER_RGB: 'rgb', CHANNEL_ORDER_BGR: 'bgr' };
  const layouts = { LAYOUT_NCHW: 'nchw', LAYOUT_NHWC: 'nhwc' };
  if (orders[p.channel_order]) {
    doc.channel_order = orders[p.channel_order];
  }
  if (layouts[p.layout]) {
    doc.layout = layouts[p.layout];
  }
  return doc;
}

function hitJson(hit, patchFile) {
  const unit = hit.unit || { y: 0, x: 0 };
  const box = hit.box || { y0: 0, x0: 0, y1: 0, x1: 0 };
  const doc = {
    rank: hit.rank,
    image: hit.image,
    score: hit.score,
    unit: [unit.y, unit.x],
    box: [box.y0, box.x0, box.y1, box.x1],
  };
  if (patchFile !== undefined) {
    doc.patch = patchFile;
  }
  return doc;
}

function makeProgress() {
  const tty = Boolean(process.stderr.isTTY);
  let last = 0;
  let shown = false;
  return {
    update(p, label) {
      const now = Date.now();
      const finished = p.images_total > 0 && p.images_scanned >= p.images_total;
      if (!finished && now - last < (tty ? 100 : 1000)) {
        return;
      }
      last = now;
      const failed = p.images_failed ? `, ${p.images_failed} failed` : '';
      const line = `${label}: ${p.images_scanned}/${p.images_total} images${failed}`;
      if (tty) {
        process.stderr.write(`\r${line}\x1b[K`);
        shown = true;
      } else {
        process.stderr.write(`${line}\n`);
      }
    },
    note(text) {
      this.close();
      process.stderr.write(`${text}\n`);
    },
    close() {
      if (shown) {
        process.stderr.write('\n');
        shown = false;
      }
    },
  };
}

function streamTopK(stub, request, server, label) {
  return new Promise((resolve, reject) => {
    const progress = makeProgress();
    const patches = [];
    let done = null;
    let settled = false;
    const call = stub.StreamTopK(request, callMetadata());
    const onSignal = () => {
      call.cancel(); // the server stops the scan promptly
      progress.close();
      process.stderr.write(`${PROG}: error: interrupted\n`);
      process.exit(EXIT_INTERRUPTED);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const finish = (error) => {
      if (settled) {
        return;
      }
      settled = true;
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      progress.close();
      if (error) {
        reject(error);
      } else if (done === null) {
        reject(new ClientError('UNKNOWN: the top-k stream ended before its done event'));
      } else {
        patches.sort((a, b) => a.hit.rank - b.hit.rank);
        resolve({ patches, done });
      }
    };
    call.on('data', (response) => {
      // StreamTopKResponse wraps the TopKEvent that both top-k streams send
      const message = response.event || {};
      switch (message.event) {
        case 'progress':
          progress.update(message.progress, label);
          break;
        case 'partial':
          break; // best-so-far snapshots: a UI could show them; this script waits for the patches
        case 'patch':
          patches.push(message.patch);
          break;
        case 'skipped':
          progress.note(`${PROG}: skipped ${message.skipped.image}: ${message.skipped.reason}`);
          break;
        case 'done':
          done = message.done;
          break;
        default:
          break; // an event type newer than these protos
      }
    });
    call.on('error', (error) => finish(new ClientError(describeRpcError(error, server))));
    call.on('end', () => finish(null));
  });
}

async function run(args) {
  const server = process.env.MAXACT_SERVER || DEFAULT_SERVER;
  const services = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const options = {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  };
  const models = new services.ModelService(server, credentials, options);
  const fields = new services.ReceptiveFieldService(server, credentials, options);
  const topk = new services.TopKService(server, credentials, options);
  try {
    // 1. The model must exist under the server's model root.
    const listed = await unary(models, 'ListModels', {}, server);
    const names = (listed.models || []).map((m) => m.name);
    if (!names.includes(args.model)) {
      const known = names.length ? names.join(', ') : '(none)';
      throw new ClientError(
        `NOT_FOUND: model '${args.model}' is not on the server at ${server}; models: ${known}`,
      );
    }

    // 2. The layer's receptive field (the geometry behind every patch box).
    const rf = await unary(
      fields,
      'GetReceptiveField',
      { model: args.model, layer: args.layer },
      server,
    );
    const shape = (rf.shape || []).join('x');
    process.stderr.write(
      `${PROG}: ${args.model} ${args.layer} [${shape}] on ${rf.input_height}x${rf.input_width} ` +
        `input '${rf.input_name}': receptive field ${describeField(rf)}\n`,
    );

    // 3. Stream the top-k scan over the dataset.
    const request = {
      query: {
        model: args.model,
        layer: args.layer,
        channel: args.channel,
        k: args.k,
        mode: 'TOP_K_MODE_IMAGE',
      },
      dataset: args.dataset,
    };
    const label = `top-${args.k} ${args.layer} channel ${args.channel}`;
    const { patches, done } = await streamTopK(topk, request, server, label);

    // 4. The PNGs exactly as received, then the one JSON document.
    fs.mkdirSync(args.outDir, { recursive: true });
    const results = patches.map((patch) => {
      const file = `rank_${patch.hit.rank}.png`;
      fs.writeFileSync(path.join(args.outDir, file), patch.png);
      return hitJson(patch.hit, file);
    });
    const doc = {
      model: args.model,
      layer: args.layer,
      channel: args.channel,
      k: done.k || args.k,
      mode: MODE_NAMES[done.mode] || 'image',
      images_scanned: done.images_scanned,
      results,
      preprocessing: preprocessingJson(done.preprocessing),
    };
    if (done.preprocessing_warning) {
      process.stderr.write(`${PROG}: warning: ${done.preprocessing_warning}\n`);
    }
    process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    process.stderr.write(`${PROG}: wrote ${results.length} patches to ${args.outDir}\n`);
  } finally {
    models.close();
    fields.close();
    topk.close();
  }
}

async function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (error) {
    process.stderr.write(`${USAGE}\n${PROG}: error: ${error.message}\n`);
    return EXIT_USAGE;
  }
  try {
    await run(args);
    return EXIT_OK;
  } catch (error) {
    if (error instanceof ClientError) {
      process.stderr.write(`${PROG}: error: ${error.message}\n`);
    } else {
      process.stderr.write(`${PROG}: error: ${error && error.stack ? error.stack : error}\n`);
    }
    return EXIT_ERROR;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { main, parseArgs, hitJson, describeRpcError, LOADER_OPTIONS };
