from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_product_price")]
    operations = [migrations.RemoveField("product", "name")]
