// Classifies reviews with transformers.js's text-classification pipeline from a model folder that
// `feelings export --layout hf` wrote, with local files only, in Node (ONNX Runtime's Node
// binding), once per model file: `fp32` (onnx/model.onnx) and `q8` (onnx/model_quantized.onnx).
//
//   (cd tests/transformers-js && npm ci --ignore-scripts)   # once
//   echo '["A fine film."]' | node tests/transformers-js/classify.mjs MODEL_DIR
//
// Prints one JSON object: for each dtype, per review, the probability of each label and the
// token ids the pipeline's tokenizer made (truncated as the pipeline truncates).
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { env, pipeline } from '@huggingface/transformers';

const folder = process.argv[2];
if (!folder) {
  console.error('usage: node classify.mjs MODEL_DIR < reviews.json');
  process.exit(2);
}
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(folder));
const name = path.basename(path.resolve(folder));
const reviews = JSON.parse(await text(process.stdin));

const result = {};
for (const dtype of ['fp32', 'q8']) {
  const classify = await pipeline('text-classification', name, { dtype, device: 'cpu' });
  const rows = [];
  for (const review of reviews) {
    const scores = await classify(review, { top_k: null });
    const ids = classify.tokenizer(review, { truncation: true }).input_ids;
    rows.push({
      scores: Object.fromEntries(scores.map((s) => [s.label, s.score])),
      ids: Array.from(ids.data, Number),
    });
  }
  await classify.dispose();
  result[dtype] = rows;
}
console.log(JSON.stringify(result));
