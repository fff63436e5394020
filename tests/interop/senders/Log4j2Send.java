import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.logging.log4j.ThreadContext;
import org.apache.logging.log4j.core.util.NetUtils;
import org.apache.logging.log4j.message.StructuredDataMessage;

/** Logs what each line of stdin asks with log4j2, configured by -Dlog4j.configurationFile;
 * prints the host name log4j2 sends first, "ok" once a line is logged, and stops log4j2
 * (flushing its appenders) at EOF. */
public class Log4j2Send {
  public static void main(String[] args) throws Exception {
    Logger log = LogManager.getLogger("billing");
    System.out.println(NetUtils.getLocalHostname());
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      String[] asked = line.split(" ", 2);
      String text = asked.length > 1 ? asked[1] : "";
      switch (asked[0]) {
        case "info" -> log.info(text);
        case "warn" -> log.warn(text);
        case "error" -> log.error(text, new IllegalStateException("payment refused", new IOException("card declined")));
        case "structured" -> {
          StructuredDataMessage message = new StructuredDataMessage("order", text, "Paid");
          message.put("id", "88");
          message.put("note", "said \"yes\" [ok]");
          log.info(message);
        }
        case "mdc" -> {
          ThreadContext.put("request_id", "r-42");
          log.info(text);
          ThreadContext.clearMap();
        }
        case "long" -> log.info("x".repeat(Integer.parseInt(text)));
        case "burst" -> {
          for (int i = 0; i < Integer.parseInt(text); i++) log.info("burst " + i);
        }
        default -> throw new IllegalArgumentException(line);
      }
      System.out.println("ok");
    }
    LogManager.shutdown();
  }
}
