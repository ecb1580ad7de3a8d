import java.sql.*;
import java.util.*;

/**
 * pgjdbc through pgwarden: what DatabaseMetaData sends to learn a schema
 * (as DBeaver, IntelliJ and ORMs on the JVM call it), then one lookup.
 * Usage: MetaCheck URL USER PASSWORD. Prints "ok NAME RESULT" or
 * "FAIL NAME SQLSTATE MESSAGE" per call.
 */
public class MetaCheck {
    interface Call {
        String run() throws Exception;
    }

    static void call(Connection c, String name, Call f) {
        try {
            System.out.println("ok " + name + " " + f.run());
        } catch (SQLException e) {
            System.out.println("FAIL " + name + " " + e.getSQLState() + " " + e.getMessage().split("\n")[0]);
        } catch (Exception e) {
            System.out.println("FAIL " + name + " " + e);
        }
    }

    static String rows(ResultSet rs, String... cols) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> r = new ArrayList<>();
            for (String col : cols) r.add(rs.getString(col));
            out.add(String.join("/", r));
        }
        rs.close();
        return out.toString();
    }

    public static void main(String[] a) throws Exception {
        try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
            DatabaseMetaData m = c.getMetaData();
            call(c, "product", () -> m.getDatabaseProductName());
            call(c, "catalogs", () -> rows(m.getCatalogs(), "TABLE_CAT"));
            call(c, "schemas", () -> rows(m.getSchemas(), "TABLE_SCHEM"));
            call(c, "tables", () -> rows(m.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"}), "TABLE_NAME"));
            call(c, "columns", () -> rows(m.getColumns(null, "public", "customers", "%"), "COLUMN_NAME"));
            call(c, "primaryKeys", () -> rows(m.getPrimaryKeys(null, "public", "customers"), "COLUMN_NAME", "PK_NAME"));
            call(c, "importedKeys", () -> rows(m.getImportedKeys(null, "public", "shipments"), "PKTABLE_NAME", "FKCOLUMN_NAME"));
            call(c, "exportedKeys", () -> rows(m.getExportedKeys(null, "public", "customers"), "FKTABLE_NAME"));
            call(c, "indexInfo", () -> rows(m.getIndexInfo(null, "public", "customers", false, false), "INDEX_NAME", "COLUMN_NAME"));
            call(c, "typeInfo", () -> {
                ResultSet rs = m.getTypeInfo();
                int n = 0;
                while (rs.next()) n++;
                return n > 0 ? "types" : "none";
            });
            call(c, "tablePrivileges", () -> rows(m.getTablePrivileges(null, "public", "customers"), "PRIVILEGE").isEmpty() ? "none" : "listed");
            call(c, "lookup", () -> {
                try (PreparedStatement p = c.prepareStatement("SELECT name, phone FROM customers WHERE id = ?")) {
                    p.setInt(1, 1);
                    ResultSet rs = p.executeQuery();
                    rs.next();
                    return rs.getString(1) + " " + rs.getString(2);
                }
            });
        }
    }
}
