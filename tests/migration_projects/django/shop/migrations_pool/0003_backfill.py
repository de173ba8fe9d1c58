from django.db import migrations


def backfill(apps, schema_editor):
    apps.get_model("shop", "Product").objects.filter(price=None).update(price=0)


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_product_price")]
    operations = [migrations.RunPython(backfill)]
