// An application logging with pino to stdout, as pino has it (JSON lines), for pino-syslog:
// what an application logs, then argv[2] lines in a burst and argv[3] as a long message.
const pino = require('pino')();

pino.info('invoice 88 paid');
pino.warn({order: 88}, 'disk 91% full');
pino.error(new Error('card declined'), 'could not pay');
pino.info(process.argv[4]);
pino.info('x'.repeat(Number(process.argv[3])));
for (let i = 0; i < Number(process.argv[2]); i++) pino.info(`burst ${i}`);
