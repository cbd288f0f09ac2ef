// A Quasar flow worker in Node with kafkajs (no Quasar code): node worker.mjs HANDLER
import { Kafka } from "kafkajs";

const kafka = new Kafka({ brokers: (process.env.KAFKA_BOOTSTRAP ?? "localhost:9092").split(",") });
const prefix = process.env.QUASAR_TOPIC_PREFIX ?? "quasar.";
const handler = process.argv[2];
// A waiting fetch ends at maxWaitTimeInMs on brokers that answer only then (Tansu): keep it short.
const consumer = kafka.consumer({ groupId: `${prefix}workers.${handler}`, sessionTimeout: 6000, maxWaitTimeInMs: 100 });
const producer = kafka.producer();

async function work(task) { // your code: return the output, or throw to report a failure
  return { echo: task.input, worker: process.pid };
}

await Promise.all([consumer.connect(), producer.connect()]);
await consumer.subscribe({ topic: `${prefix}tasks.${handler}`, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    const task = JSON.parse(message.value.toString());
    if (task.deadline && Date.now() / 1000 > task.deadline) return; // the flow has retried it
    console.log(`${handler}: working on ${task.task_id}`);
    const reply = { task_id: task.task_id, instance_id: task.instance_id, step: task.step,
                    attempt: task.attempt, handler: task.handler };
    try {
      Object.assign(reply, { status: "completed", output: await work(task) });
    } catch (err) {
      Object.assign(reply, { status: "failed", error: { code: err.name, message: String(err.message) } });
    }
    await producer.send({ topic: task.reply_topic, messages: [{ key: task.instance_id, value: JSON.stringify(reply) }] });
  },
});
