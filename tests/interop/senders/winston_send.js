// winston with winston-syslog, logging what each line of stdin asks (JSON) to herolog
// serve; the transport's options are argv[2] (JSON). Prints "ok" once a line is logged,
// and exits when stdin closes (the test closes it once serve has stored what it expects:
// winston-syslog's close() drops what it has not flushed yet).
const winston = require('winston');
require('winston-syslog');
const readline = require('readline');

const transport = new winston.transports.Syslog(JSON.parse(process.argv[2]));
transport.on('error', error => process.stderr.write(`winston-syslog: ${error}\n`));
const logger = winston.createLogger({
  levels: winston.config.syslog.levels,
  level: 'debug',
  // As an application logs errors: the stack, of several lines, as the message.
  format: winston.format.combine(
    winston.format.errors({stack: true}),
    winston.format.printf(info => info.stack || info.message),
  ),
  transports: [transport],
});
readline.createInterface({input: process.stdin})
  .on('line', line => {
    const asked = JSON.parse(line);
    if (asked.await === 'disconnected') {
      // winston-syslog queues what is logged once it has seen its connection close
      if (transport.connected) {
        transport.socket.once('close', () => process.stdout.write('ok\n'));
        return;
      }
    } else if (asked.error) {
      logger.log('error', new Error(asked.error));
    } else {
      for (let i = 0; i < (asked.repeat || 1); i++) {
        logger.log(asked.level, asked.repeat ? `${asked.message} ${i}` : asked.message);
      }
    }
    process.stdout.write('ok\n');
  })
  .on('close', () => process.exit(0));
